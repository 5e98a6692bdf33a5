"""``python -m bench [--profile NAME] [--versions N]``: time adaptvc's core operations against a durable copy.

Every figure is a median of repeated runs in one process, and every ratio divides two figures of the same
run, so the numbers can be compared on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .adapters import PROFILES, write_adapter


def timed(cmd: list[str], cwd: Path | None = None, ok_codes: tuple[int, ...] = (0,)) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if res.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return elapsed


def median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def store_bytes(work: Path) -> int:
    return sum(p.stat().st_size for p in (work / ".adaptvc" / "objects").rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--profile", default="7b-r64-all-bf16", choices=sorted(PROFILES))
    ap.add_argument("--versions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="work in this folder (default: a temporary one)")
    args = ap.parse_args()
    profile = PROFILES[args.profile]
    adaptvc = [sys.executable, "-m", "adaptvc"]
    root = Path(args.dir or tempfile.mkdtemp(prefix="adaptvc-bench-"))
    work, src = root / "work", root / "versions"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"profile {profile.name}: {profile.nbytes() / 1e6:.0f} MB, {len(profile.shapes())} tensors; "
          f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}", flush=True)

    # versions 1..N fully changed, then one version with half of the lora_B tensors changed
    prev = None
    for v in range(1, args.versions + 1):
        prev = write_adapter(src / f"v{v}", profile, seed=v, previous=prev)
    write_adapter(src / "half", profile, seed=999, previous=prev, change="half-B")
    weights = src / "v1" / "adapter_model.safetensors"
    size = weights.stat().st_size

    def dd() -> float:
        out = root / "dd.out"
        t = timed(["dd", f"if={weights}", f"of={out}", "bs=16M", "conv=fsync", "status=none"])
        out.unlink()
        return t

    def cp() -> float:
        out = root / "cp.out"
        t = timed(["cp", str(weights), str(out)])
        out.unlink()
        return t

    dd_s, cp_s = median(dd, args.repeat), median(cp, args.repeat)
    timed([*adaptvc, "init", str(work)])
    def commit(folder: Path, message: str, ok_codes: tuple[int, ...] = (0,)) -> float:
        return timed([*adaptvc, "-C", str(work), "commit", "-q", "-m", message, "--from", str(folder)],
                     ok_codes=ok_codes)

    commit_full = [commit(src / f"v{v}", f"v{v}") for v in range(1, args.versions + 1)]
    growth_full = store_bytes(work)
    before = store_bytes(work)
    commit_half = commit(src / "half", "half")
    growth_half = store_bytes(work) - before
    # no-op: the same folder again is refused as "nothing to commit" after hashing it
    noop = median(lambda: commit(src / "half", "same", ok_codes=(1,)), args.repeat)

    def checkout() -> float:
        out = root / "co"
        t = timed([*adaptvc, "-C", str(work), "checkout", "-q", "HEAD~2", "-o", str(out)])
        shutil.rmtree(out)
        return t

    checkout_s = median(checkout, args.repeat)
    log_s = median(lambda: timed([*adaptvc, "-C", str(work), "log", "--json"]), args.repeat)
    diff_s = median(lambda: timed([*adaptvc, "-C", str(work), "diff", "HEAD~2", "HEAD~1", "--json"]), args.repeat)

    def read_both() -> float:
        t = time.perf_counter()
        for folder in ("v1", "v2"):
            with open(src / folder / "adapter_model.safetensors", "rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass
        return time.perf_counter() - t

    read_s = median(read_both, args.repeat)

    full_s = statistics.median(commit_full[1:] or commit_full)
    rows = [
        ("durable copy (dd conv=fsync)", dd_s, 1.0),
        ("cp", cp_s, cp_s / dd_s),
        ("commit, first version (empty store)", commit_full[0], commit_full[0] / dd_s),
        ("commit, every tensor changed (median)", full_s, full_s / dd_s),
        ("commit, half of lora_B changed", commit_half, commit_half / dd_s),
        ("commit of an unchanged adapter (refused)", noop, noop / dd_s),
        ("checkout of an old version", checkout_s, checkout_s / dd_s),
        (f"log of {args.versions + 1} commits", log_s, log_s / dd_s),
        ("diff of two fully changed versions", diff_s, diff_s / dd_s),
        ("(reading both files once, in Python)", read_s, read_s / dd_s),
    ]
    print(f"\n| operation on {size / 1e6:.0f} MB | seconds | × durable copy |\n|---|---:|---:|")
    for name, s, r in rows:
        print(f"| {name} | {s:.3f} | {r:.2f} |")
    print(f"\nstore after {args.versions} fully changed versions: {growth_full / 1e6:.0f} MB "
          f"({growth_full / (args.versions * size):.0%} of the raw bytes)")
    print(f"store growth for the half-lora_B version: {growth_half / 1e6:.1f} MB "
          f"({growth_half / size:.0%} of one version)")
    if not args.dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
