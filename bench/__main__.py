"""``python -m bench``: adaptvc against a durable copy, git-lfs and DVC, side by side in one run.

Every figure is a median of repeated runs, and every ratio divides two figures of the same run, so results
can be compared on a shared, noisy machine. ``--quick`` runs a small profile in about two minutes;
``--write-docs`` writes docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
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
from .report import render, targets
from .tools import Adaptvc, Dvc, GitLfs, Tool, run

ROOT = Path(__file__).resolve().parents[1]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def machine() -> str:
    mem = ""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores{mem}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def durable_copy(src: Path, scratch: Path) -> float:
    out = scratch / "dd.out"
    t = run(["dd", f"if={src}", f"of={out}", "bs=16M", "conv=fsync", "status=none"]).seconds
    out.unlink()
    return t


def fresh_copy(src: Path, scratch: Path, k: int) -> float:
    """A durable copy to a new file that is kept, like every version a tool stores: on a VM, pages that
    were never touched before are slower to write than the recycled pages of a deleted file."""
    return run(["dd", f"if={src}", f"of={scratch / f'fresh-{k}.out'}", "bs=16M", "conv=fsync",
                "status=none"]).seconds


def read_both(a: Path, b: Path) -> float:
    start = time.perf_counter()
    for f in (a, b):
        with open(f, "rb", buffering=0) as fh:
            while fh.read(16 << 20):
                pass
    return time.perf_counter() - start


def bench_tool(tool: Tool, full: list[Path], half: list[Path], repeat: int, scratch: Path) -> dict:
    tool.init()
    commits, growth = [], []
    for i, v in enumerate(full, 1):
        commits.append(tool.commit(v, f"v{i}"))
        growth.append(tool.store_bytes())
    half_runs = []
    for i, h in enumerate(half, 1):
        half_runs.append(tool.commit(h, f"h{i}"))
        growth.append(tool.store_bytes())
    checkouts = []
    for k in range(repeat + 1):  # the first one warms up
        out = scratch / f"co-{tool.name}-{k}"
        r = tool.checkout(1, out)
        shutil.rmtree(out, ignore_errors=True)
        if k:
            checkouts.append(r)
    return {
        "commit_first": commits[0].seconds,
        "commit_full": median([c.seconds for c in commits[1:]]),
        "commit_half": median([c.seconds for c in half_runs]),
        "checkout": median([c.seconds for c in checkouts]),
        "store_after_full": growth[len(full) - 1],
        "growth": growth,
        "peak_kb": max([c.peak_kb for c in commits + half_runs + checkouts] or [0]),
    }


def adaptvc_extras(full: list[Path], repeat: int, scratch: Path, tool: Adaptvc) -> dict:
    cli = Adaptvc.cli
    out: dict = {}
    # status and a no-op commit of an unchanged work tree (stat cache warm after the first call)
    work = scratch / "status-work"
    shutil.copytree(full[-1], work)
    run([*cli, "init", str(work)])
    run([*cli, "-C", str(work), "commit", "-q", "-m", "v"])
    run([*cli, "-C", str(work), "status"])
    out["status"] = median([run([*cli, "-C", str(work), "status"]).seconds for _ in range(repeat)])
    out["noop_commit"] = median([run([*cli, "-C", str(work), "commit", "-q", "-m", "same"], ok=(1,)).seconds
                                 for _ in range(repeat)])
    # diff of two fully changed versions, against reading both files once
    n = len(full)
    run([*cli, "-C", str(tool.work), "diff", f"HEAD~{n + 1}", f"HEAD~{n}", "--json"])
    diffs = [run([*cli, "-C", str(tool.work), "diff", f"HEAD~{n + 1}", f"HEAD~{n}", "--json"]) for _ in range(repeat)]
    out["diff"] = median([d.seconds for d in diffs])
    out["diff_peak_kb"] = max(d.peak_kb for d in diffs)
    out["read_both"] = median([read_both(full[0] / "adapter_model.safetensors", full[1] / "adapter_model.safetensors")
                               for _ in range(repeat)])
    # log of 1,000 commits
    log_work = scratch / "log-work"
    code = ("import sys\nfrom adaptvc import Repository\nr = Repository.init(sys.argv[1])\n"
            "r.commit('c0', source=sys.argv[2])\n"
            "for i in range(999):\n    r.commit(f'c{i + 1}', source=sys.argv[2], allow_empty=True)\n")
    subprocess.run([sys.executable, "-c", code, str(log_work), str(full[0])], check=True)
    run([*cli, "-C", str(log_work), "log", "--json"])
    out["log_1000"] = median([run([*cli, "-C", str(log_work), "log", "--json"]).seconds for _ in range(repeat)])
    # storage after lossless compression, and checkout from the compressed store
    out["store_uncompressed"] = tool.store_bytes()
    run([*cli, "-C", str(tool.work), "gc", "--aggressive"])
    out["store_compressed"] = tool.store_bytes()
    outs = []
    for k in range(repeat + 1):
        o = scratch / f"co-z-{k}"
        r = tool.checkout(1, o)
        shutil.rmtree(o, ignore_errors=True)
        if k:
            outs.append(r.seconds)
    out["checkout_compressed"] = median(outs)
    # start-up: which heavy modules does a command import?
    probe = ("import sys\nfrom adaptvc.cli.main import main\ntry:\n    main(['-C', sys.argv[1], 'status'])\n"
             "except SystemExit:\n    pass\nprint(','.join(m for m in ('torch', 'transformers', 'huggingface_hub', "
             "'numpy') if m in sys.modules) or 'none', file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe, str(work)], capture_output=True, text=True)
    out["startup_heavy"] = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "?"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--profile", default="7b-r64-all-bf16", choices=sorted(PROFILES))
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--half", type=int, default=3, help="versions with half of the lora_B tensors changed")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="adaptvc,git-lfs,dvc")
    ap.add_argument("--dvc", default=shutil.which("dvc") or str(ROOT / ".venv-bench" / "bin" / "dvc"))
    ap.add_argument("--quick", action="store_true", help="the 34 MB profile, 4 versions")
    ap.add_argument("--dir", help="work here (default: a temporary folder, removed afterwards)")
    ap.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png")
    args = ap.parse_args()
    if args.quick:
        args.profile, args.versions, args.half = "7b-r16-attn-fp16", 4, 2
    profile = PROFILES[args.profile]
    root = Path(args.dir or tempfile.mkdtemp(prefix="adaptvc-bench-"))
    shutil.rmtree(root, ignore_errors=True)
    scratch = root / "scratch"
    scratch.mkdir(parents=True)
    started = time.time()
    print(f"{profile.name}: {profile.nbytes() / 1e6:.0f} MB, {len(profile.shapes())} tensors; {args.versions} "
          f"versions, {args.half} half-changed; {machine()}", flush=True)

    full, prev = [], None
    for i in range(1, args.versions + 1):
        prev = write_adapter(root / "versions" / f"v{i}", profile, seed=i, previous=prev)
        full.append(root / "versions" / f"v{i}")
    half = []
    for i in range(1, args.half + 1):
        prev = write_adapter(root / "versions" / f"h{i}", profile, seed=1000 + i, previous=prev, change="half-B")
        half.append(root / "versions" / f"h{i}")
    size = (full[0] / "adapter_model.safetensors").stat().st_size
    half_share = _changed_share(full[-1], half[0]) if half else 0.0

    durable_copy(full[0] / "adapter_model.safetensors", scratch)
    dd = median([durable_copy(full[0] / "adapter_model.safetensors", scratch) for _ in range(args.repeat)])
    dd_fresh = median([fresh_copy(full[k] / "adapter_model.safetensors", scratch, k) for k in range(args.repeat)])
    tools: list[Tool] = []
    for name in args.tools.split(","):
        tool = {"adaptvc": lambda: Adaptvc(root / "adaptvc"), "git-lfs": lambda: GitLfs(root / "git-lfs"),
                "dvc": lambda: Dvc(root / "dvc", args.dvc)}[name.strip()]()
        if tool.available():
            tools.append(tool)
        else:
            print(f"{name}: not installed, skipped (see docs/benchmarks.md)", flush=True)
    results = {}
    for tool in tools:
        print(f"running {tool.name} ...", flush=True)
        results[tool.name] = bench_tool(tool, full, half, args.repeat, scratch)
    extras = adaptvc_extras(full, args.repeat, scratch, tools[0]) if tools and tools[0].name == "adaptvc" else {}
    data = {"profile": profile.name, "size": size, "versions": args.versions, "half_share": half_share,
            "machine": machine(), "dd": dd, "dd_fresh": dd_fresh, "results": results, "extras": extras,
            "seconds": time.time() - started, "date": time.strftime("%Y-%m-%d")}
    markdown, chart = render(data)
    print("\n" + markdown)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{stamp}.json").write_text(json.dumps(data, indent=2))
    (out_dir / f"{stamp}.md").write_text(markdown)
    if chart is not None:
        chart.savefig(out_dir / f"{stamp}.png", dpi=110)
    if args.write_docs:
        write_docs(data, markdown, chart)
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nfinished in {time.time() - started:.0f} s; results in {out_dir}")
    misses = [t for t in targets(data) if t[3] == "MISS"]
    if misses:
        print(f"{len(misses)} target(s) missed: " + "; ".join(t[0] for t in misses))


def _changed_share(a: Path, b: Path) -> float:
    """Share of the tensor bytes of adapter_model.safetensors that differ between two versions."""
    from adaptvc.safetensors_format import read_header

    def tensors(p: Path) -> dict[str, bytes]:
        with open(p / "adapter_model.safetensors", "rb") as f:
            header = read_header(f, os.fstat(f.fileno()).st_size, str(p))
            data = f.read()
        return {t.name: data[t.begin:t.end] for t in header.tensors}

    ta, tb = tensors(a), tensors(b)
    total = sum(len(v) for v in ta.values())
    changed = sum(len(v) for k, v in ta.items() if tb.get(k) != v)
    return changed / total if total else 0.0


def write_docs(data: dict, markdown: str, chart) -> None:
    from .report import docs_page

    (ROOT / "docs" / "benchmarks.md").write_text(docs_page(data, markdown))
    if chart is not None:
        chart.savefig(ROOT / "docs" / "benchmarks.png", dpi=110)


if __name__ == "__main__":
    main()
