"""``python -m bench``: adaptvc against a durable ``dd`` of the same bytes, interleaved in the same rounds.

Each round runs every subject and its reference once, in a shuffled order; each figure is the median of
per-round ratios (or differences), with p25–p75. ``--quick`` runs the 34 MB profile in a few minutes;
``--compare`` adds git-lfs and DVC to the same rounds; ``--baseline DIR`` adds another adaptvc source tree
(an older main) to the same rounds, for before/after; ``--write-docs`` writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .adapters import PROFILES, write_adapter
from .report import docs_page, render, targets
from .rounds import Measured, bench_env, best_of, measure, run_rounds
from .scale import big_tensor_adapter, count_files, history, many_versions
from .tools import Dvc, GitLfs, tree_bytes

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


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


def read_files(*paths: Path) -> Measured:
    """The reference for diff: reading both versions' files once, in the same process model (one process)."""
    start = time.perf_counter()
    for f in paths:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(16 << 20):
                pass
    return Measured(time.perf_counter() - start)


class Adaptvc:
    """One adaptvc source tree (this one, or a baseline) run as users run it: ``python -m adaptvc``."""

    def __init__(self, label: str, source: Path | None = None) -> None:
        self.label = label
        self.env = bench_env()
        # run from a neutral folder: ``python -m`` puts the current folder first on sys.path, so from the
        # repository's own folder a baseline would silently run this tree's code
        self.cwd = Path(tempfile.gettempdir())
        if source is not None:
            self.env["PYTHONPATH"] = str(source)
        found = subprocess.run([PY, "-c", "import adaptvc, os; print(os.path.dirname(adaptvc.__file__))"],
                               env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True).stdout.strip()
        expected = (source or ROOT) / "adaptvc"
        if Path(found).resolve() != expected.resolve():
            raise SystemExit(f"{label}: python -m adaptvc would run {found}, not {expected}")

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,)) -> Measured:
        return measure([PY, "-m", "adaptvc", *args], env=self.env, cwd=self.cwd, ok=ok)


def _source_commit(tree: Path) -> str:
    """The commit a baseline tree was taken from: its COMMIT file (``git archive``d trees), else git's HEAD."""
    marker = tree / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()[:12]
    res = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() or str(tree)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--profile", default="7b-r64-all-bf16", choices=sorted(PROFILES))
    ap.add_argument("--rounds", type=int, help="default 8 (3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="the 34 MB profile, 3 rounds, smaller scale inputs")
    ap.add_argument("--big-tensor-mb", type=int, help="the diff-memory row's tensor size (1050; 256 with --quick)")
    ap.add_argument("--versions-for-files", type=int,
                    help="versions committed for the file count (1000; 200 with --quick)")
    ap.add_argument("--history", type=int, default=10_000, help="commits in the log row's history")
    ap.add_argument("--compare", action="store_true", help="also run git-lfs and DVC in the same rounds")
    ap.add_argument("--dvc", default=shutil.which("dvc") or str(ROOT / ".venv-bench" / "bin" / "dvc"))
    ap.add_argument("--baseline", type=Path, help="another adaptvc source tree to run in the same rounds")
    ap.add_argument("--real-checkpoints", type=Path, help="a folder of step-*/ checkpoints (bench.train_lora) "
                                                          "for the compression row")
    ap.add_argument("--train-real", type=int, metavar="STEPS",
                    help="train bench.train_lora for STEPS steps, saved every 10, for the real-checkpoints row "
                         "(without --real-checkpoints; a complete run in --train-dir is reused). On 2 cores: 60 "
                         "steps take about 2 min, 600 (the figure to quote) about 20")
    ap.add_argument("--train-dir", type=Path, default=Path(tempfile.gettempdir()) / "adaptvc-bench-lora",
                    help="where --train-real keeps its checkpoints (default: %(default)s)")
    ap.add_argument("--object-storage", type=int, metavar="N", default=0,
                    help="also push and clone N of the fully changed versions to an S3 server (moto, 127.0.0.1) "
                         "side by side with boto3 used directly (bench.object_storage; needs the s3 and test "
                         "extras)")
    ap.add_argument("--dir", help="work here (default: a temporary folder, removed afterwards)")
    ap.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md from this run")
    args = ap.parse_args()
    if args.quick:
        args.profile = "7b-r16-attn-fp16"
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.big_tensor_mb = args.big_tensor_mb or (256 if args.quick else 1050)
    args.versions_for_files = args.versions_for_files or (200 if args.quick else 1000)
    profile = PROFILES[args.profile]
    root = Path(args.dir or tempfile.mkdtemp(prefix="adaptvc-bench-"))
    shutil.rmtree(root, ignore_errors=True)
    scratch = root / "scratch"
    scratch.mkdir(parents=True)
    started = time.time()
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"{profile.name}: {profile.nbytes() / 1e6:.0f} MB, {len(profile.shapes())} tensors; {args.rounds} "
        f"rounds; {machine()}")

    # -- inputs ------------------------------------------------------------------------------------------
    say("writing versions ...")
    n = args.rounds
    full, prev = [], None
    for i in range(n + 2):
        prev = write_adapter(root / "versions" / f"v{i}", profile, seed=i + 1, previous=prev)
        full.append(root / "versions" / f"v{i}")
    part, prev = [root / "versions" / "p0"], write_adapter(root / "versions" / "p0", profile, seed=1)
    for i in range(1, n + 1):
        prev = write_adapter(root / "versions" / f"p{i}", profile, seed=500 + i, previous=prev, change="half-B")
        part.append(root / "versions" / f"p{i}")
    size = (full[0] / "adapter_model.safetensors").stat().st_size
    share = changed_share(part[0], part[1])
    big = [big_tensor_adapter(root / "versions" / f"big{i}", args.big_tensor_mb, seed=i) for i in range(2)]

    subjects = [Adaptvc("adaptvc")] + ([Adaptvc("baseline", args.baseline.resolve())] if args.baseline else [])
    repos: dict[str, dict[str, Path]] = {}
    for s in subjects:
        say(f"preparing {s.label} repositories ...")
        r = repos[s.label] = {k: root / s.label / k for k in ("full", "part", "z", "clean", "big")}
        s("init", str(r["full"]))
        for i in range(2):
            s("-C", str(r["full"]), "commit", "-q", "-m", f"v{i + 1}", "--from", str(full[i]))
            s("-C", str(r["full"]), "tag", f"v{i + 1}")
        s("init", str(r["part"]))
        s("-C", str(r["part"]), "commit", "-q", "-m", "p0", "--from", str(part[0]))
        s("init", str(r["z"]))
        for i in range(2):
            s("-C", str(r["z"]), "commit", "-q", "-m", f"v{i + 1}", "--from", str(full[i]))
            s("-C", str(r["z"]), "tag", f"v{i + 1}")
        s("-C", str(r["z"]), "gc", "--aggressive")
        shutil.copytree(full[0], r["clean"])
        s("init", str(r["clean"]))
        s("-C", str(r["clean"]), "commit", "-q", "-m", "v1")
        s("-C", str(r["clean"]), "status")
        s("init", str(r["big"]))
        for i in range(2):
            s("-C", str(r["big"]), "commit", "-q", "-m", f"b{i}", "--from", str(big[i]))
    say(f"building a history of {args.history:,} commits ...")
    log_repo = history(root / "history", args.history)
    me = subjects[0]
    me("-C", str(log_repo), "log")  # builds the commit cache, as the first log of a user's repository does

    others = []
    if args.compare:
        for tool in (GitLfs(root / "git-lfs"), Dvc(root / "dvc", args.dvc)):
            if tool.available():
                tool.init()
                tool.commit(full[0], "v1")
                tool.commit(full[1], "v2")
                others.append(tool)
            else:
                say(f"{tool.name}: not installed, skipped")

    # -- rounds ------------------------------------------------------------------------------------------
    trials: dict = {
        "dd": lambda k: measure(["dd", f"if={full[k + 2] / 'adapter_model.safetensors'}",
                                 f"of={scratch / f'dd-{k}.out'}", "bs=16M", "conv=fsync", "status=none"]),
        "read_both": lambda k: read_files(full[0] / "adapter_model.safetensors", full[1] / "adapter_model.safetensors"),
        "read_big": lambda k: read_files(*(b / "adapter_model.safetensors" for b in big)),
        "bare": lambda k: best_of(5, lambda: measure([PY, "-c", "import xxhash"])),
    }
    for s in subjects:
        r, p = repos[s.label], s.label
        trials.update({
            f"{p}:commit_full": lambda k, s=s, r=r: s("-C", str(r["full"]), "commit", "-q", "-m", f"r{k}",
                                                      "--from", str(full[k + 2])),
            f"{p}:commit_part": lambda k, s=s, r=r: s("-C", str(r["part"]), "commit", "-q", "-m", f"p{k + 1}",
                                                      "--from", str(part[k + 1])),
            f"{p}:checkout": lambda k, s=s, r=r, p=p: s("-C", str(r["full"]), "checkout", "-q", "v1", "-o",
                                                        str(scratch / f"co-{p}-{k}")),
            f"{p}:checkout_z": lambda k, s=s, r=r, p=p: s("-C", str(r["z"]), "checkout", "-q", "v1", "-o",
                                                          str(scratch / f"coz-{p}-{k}")),
            f"{p}:diff": lambda k, s=s, r=r: s("-C", str(r["full"]), "diff", "v1", "v2"),
            f"{p}:diff_big": lambda k, s=s, r=r: s("-C", str(r["big"]), "diff", "HEAD~1", "HEAD"),
            f"{p}:version": lambda k, s=s: best_of(5, lambda: s("--version")),
            f"{p}:status": lambda k, s=s, r=r: best_of(3, lambda: s("-C", str(r["clean"]), "status")),
        })
    trials["adaptvc:log"] = lambda k: best_of(3, lambda: me("-C", str(log_repo), "log"))
    for tool in others:
        trials[f"{tool.name}:commit_full"] = lambda k, t=tool: as_measured(t.commit(full[k + 2], f"r{k}"))
        trials[f"{tool.name}:checkout"] = lambda k, t=tool: as_measured(t.checkout(1, scratch / "unused"))

    def clean_up(k: int) -> None:
        for p in scratch.iterdir():
            if p.name.startswith(("co-", "coz-")):
                shutil.rmtree(p, ignore_errors=True)

    say(f"running {len(trials)} trials x {n} rounds ...")
    results = run_rounds(trials, n, seed=int(time.time()), between=clean_up, log=say)

    # -- once: sizes and counts --------------------------------------------------------------------------
    say("compressing the fully changed versions (gc --aggressive) ...")
    full_repo = repos["adaptvc"]["full"]
    raw = tree_bytes(full_repo / ".adaptvc" / "objects")
    me("-C", str(full_repo), "gc", "--aggressive")
    compressed = tree_bytes(full_repo / ".adaptvc" / "objects")
    if args.train_real and not args.real_checkpoints:
        args.real_checkpoints = trained_checkpoints(args.train_real, args.train_dir, say)
    real = real_checkpoints(args.real_checkpoints, root, me, say) if args.real_checkpoints else None
    say(f"committing {args.versions_for_files:,} fully changed versions of a small adapter ...")
    files = many_versions(root / "many", args.versions_for_files)
    data = {
        "profile": profile.name, "size": size, "rounds": n, "share": share, "machine": machine(),
        "date": time.strftime("%Y-%m-%d"), "big_tensor_mb": args.big_tensor_mb, "history": args.history,
        "subjects": [s.label for s in subjects], "others": [t.name for t in others],
        "results": {k: [{"seconds": m.seconds, "peak_kb": m.peak_kb} for m in v] for k, v in results.items()},
        "compression": {"versions": n + 2, "raw": raw, "compressed": compressed, "real": real},
        "files": files, "store_files_full": count_files(full_repo / ".adaptvc" / "objects"),
        "baseline": _source_commit(args.baseline) if args.baseline else None,
        "seconds": time.time() - started,
    }
    if args.object_storage:
        from . import object_storage

        say(f"pushing and cloning {args.object_storage} versions to S3 (moto) and with boto3 directly ...")
        data["object_storage"] = object_storage.run(full[:args.object_storage], repeat=max(2, min(n, 3)),
                                                    scratch=root, log=say)
    markdown = render(data)
    if data.get("object_storage"):
        from .object_storage import render as render_object_storage

        markdown += "\n\n" + render_object_storage(data["object_storage"])
    say("\n" + markdown)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{stamp}.json").write_text(json.dumps(data, indent=2))
    (out_dir / f"{stamp}.md").write_text(markdown)
    if args.write_docs:
        (ROOT / "docs" / "benchmarks.md").write_text(docs_page(data, markdown))
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    say(f"\nfinished in {time.time() - started:.0f} s; results in {out_dir}")
    misses = [t for t in targets(data) if t.verdict == "MISS"]
    if misses:
        say(f"{len(misses)} target(s) missed: " + "; ".join(t.name for t in misses))


def as_measured(run) -> Measured:  # a bench.tools.Run
    return Measured(run.seconds, run.peak_kb)


def trained_checkpoints(steps: int, cache: Path, say) -> Path:
    """Checkpoints of :mod:`bench.train_lora` trained ``steps`` steps and saved every 10 (reused when a complete
    run with the same setup is in ``cache``): the folder holding the ``step-*`` folders."""
    from .train_lora import Setup, train

    folder = cache / ("full" if steps == Setup().steps else f"full-{steps}")  # ("full": bench.compression's run)
    say(f"training a LoRA for {steps} steps into {folder} (bench.train_lora; reused when complete) ...")
    train(folder, Setup(steps=steps, every=10), log=lambda m: say(f"  train: {m}"))
    return folder


def real_checkpoints(folder: Path, root: Path, me: Adaptvc, say) -> dict:
    """Commit consecutive real checkpoints (``step-*`` folders), then ``gc --aggressive``: stored share."""
    steps = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))
    say(f"committing {len(steps)} real checkpoints from {folder} ...")
    work = root / "real"
    me("init", str(work))
    for p in steps:
        me("-C", str(work), "commit", "-q", "-m", p.name, "--from", str(p))
    raw = tree_bytes(work / ".adaptvc" / "objects")
    me("-C", str(work), "gc", "--aggressive")
    return {"checkpoints": len(steps), "raw": raw, "compressed": tree_bytes(work / ".adaptvc" / "objects")}


def changed_share(a: Path, b: Path) -> float:
    """Share of the tensor bytes of adapter_model.safetensors that differ between two versions."""
    from adaptvc.safetensors_format import read_header

    def tensors(p: Path) -> dict[str, bytes]:
        with open(p / "adapter_model.safetensors", "rb") as f:
            header = read_header(f, os.fstat(f.fileno()).st_size, str(p))
            data = f.read()
        return {t.name: data[t.begin:t.end] for t in header.tensors}

    ta, tb = tensors(a), tensors(b)
    total = sum(len(v) for v in ta.values())
    return sum(len(v) for k, v in ta.items() if tb.get(k) != v) / total if total else 0.0


if __name__ == "__main__":
    main()
