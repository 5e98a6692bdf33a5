"""Push and clone to an S3 server (moto, on 127.0.0.1), side by side with the client library used directly.

:func:`run` takes the version folders the benchmark wrote and, in each round, on an emptied server:

* ``adaptvc push`` of the whole history (every version committed beforehand, outside the timing), against
  uploading the same files with boto3's managed transfer (``upload_file``, its default multipart and thread
  settings), one key per file per version;
* ``adaptvc clone`` against downloading those files with ``download_file``.

The two sides of a round run back to back, in alternating order, so each per-round ratio compares runs made
under the same machine load; the report gives the median of the per-round ratios with p25–p75. Bytes: what
adaptvc sent, what the bucket holds afterwards (listed at the server), and the unique bytes of the history
(every distinct object once) — the three are equal when nothing moves twice.

``python -m bench.object_storage VERSION_FOLDER...`` runs it alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "p25": _quantile(xs, 0.25), "p75": _quantile(xs, 0.75)}


class _MotoServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Drop every bucket (moto's reset API), so each round starts empty and memory is returned."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=60).read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(versions: list[Path], repeat: int = 3, scratch: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Push/clone of ``versions`` (folders holding an adapter) vs the same files moved with boto3 directly."""
    try:
        import boto3
        import moto  # noqa: F401 (the server is started as its own process)
    except ImportError as e:
        return {"skipped": f"needs boto3 and moto[server] ({e.name} is missing)"}
    from adaptvc import Repository

    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="adaptvc-bench-s3-")) if scratch is None else scratch / "object-storage"
    scratch.mkdir(parents=True, exist_ok=True)
    server = _MotoServer()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=server.endpoint)
    os.environ.pop("AWS_PROFILE", None)
    try:
        # the history, committed once (not timed)
        repo = Repository.init(scratch / "work")
        for i, folder in enumerate(versions):
            for f in folder.iterdir():
                if f.is_file():
                    shutil.copyfile(f, repo.work_tree / f.name)
            repo.commit(f"v{i + 1}")
        unique = _unique_bytes(repo)
        files = [f for folder in versions for f in sorted(folder.iterdir()) if f.is_file()]
        file_bytes = sum(f.stat().st_size for f in files)
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
        rounds: list[dict[str, float]] = []
        pushed = stored = 0
        for r in range(repeat):
            server.reset()
            client.create_bucket(Bucket="bench")
            times, pushed, stored = _round(r, repo, files, client, scratch)
            rounds.append(times)
            log(f"  round {r + 1}: push {times['push_adaptvc']:.2f} s vs boto3 {times['push_direct']:.2f} s; "
                f"clone {times['clone_adaptvc']:.2f} s vs boto3 {times['clone_direct']:.2f} s")
        return {
            "versions": len(versions), "files": len(files), "file_bytes": file_bytes, "unique_bytes": unique,
            "pushed_bytes": pushed, "stored_bytes": stored, "rounds": rounds,
            "push_ratio": _summary([x["push_adaptvc"] / x["push_direct"] for x in rounds]),
            "clone_ratio": _summary([x["clone_adaptvc"] / x["clone_direct"] for x in rounds]),
            "push_seconds": _summary([x["push_adaptvc"] for x in rounds]),
            "push_direct_seconds": _summary([x["push_direct"] for x in rounds]),
            "clone_seconds": _summary([x["clone_adaptvc"] for x in rounds]),
            "clone_direct_seconds": _summary([x["clone_direct"] for x in rounds]),
            "workers": os.environ.get("ADAPTVC_TRANSFER_WORKERS", "8"),
        }
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _round(r: int, repo: Any, files: list[Path], client: Any, scratch: Path) -> tuple[dict[str, float], int, int]:
    """One round on an empty bucket: (seconds of each side, bytes adaptvc pushed, bytes the bucket holds)."""
    from adaptvc import Repository

    url = f"s3://bench/round{r}"
    name = f"s3r{r}"
    repo.add_remote(name, url)
    keys = [f"direct{r}/{f.parent.name}-{i}/{f.name}" for i, f in enumerate(files)]
    pushed: list[int] = []

    def push_adaptvc() -> float:
        t, result = _timed(lambda: repo.push(name))
        pushed.append(result.bytes)
        return t

    def push_direct() -> float:
        return _timed(lambda: [client.upload_file(str(f), "bench", k) for f, k in zip(files, keys, strict=True)])[0]

    def clone_adaptvc() -> float:
        target = scratch / f"clone{r}"
        t, _ = _timed(lambda: Repository.clone(url, target))
        shutil.rmtree(target, ignore_errors=True)
        return t

    def clone_direct() -> float:
        target = scratch / f"direct{r}"
        target.mkdir()
        t, _ = _timed(lambda: [client.download_file("bench", k, str(target / f"{i}-{Path(k).name}"))
                               for i, k in enumerate(keys)])
        shutil.rmtree(target, ignore_errors=True)
        return t

    if r % 2 == 0:
        pa, pd = push_adaptvc(), push_direct()
        ca, cd = clone_adaptvc(), clone_direct()
    else:
        pd, pa = push_direct(), push_adaptvc()
        cd, ca = clone_direct(), clone_adaptvc()
    stored = sum(o["Size"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket="bench", Prefix=f"round{r}/objects/") for o in page.get("Contents", ()))
    return {"push_adaptvc": pa, "push_direct": pd, "clone_adaptvc": ca, "clone_direct": cd}, pushed[0], stored


def _unique_bytes(repo: Any) -> int:
    """Every distinct object the history reaches, once."""
    from adaptvc.ops.graph import closure

    return sum(repo.store.size(o) for o in closure(repo.store, [repo.head()], lambda _: False))


def render(data: dict[str, Any]) -> str:
    """A markdown table of :func:`run`'s result."""
    if "skipped" in data:
        return f"object storage: skipped ({data['skipped']})"

    def ratio(key: str) -> str:
        s = data[key]
        return f"{s['median']:.2f}× (p25–p75 {s['p25']:.2f}–{s['p75']:.2f})"

    mb = 1e6
    return "\n".join([
        f"| S3 (moto, 127.0.0.1), {data['versions']} versions, {len(data['rounds'])} rounds | adaptvc | boto3 "
        "directly | ratio |",
        "|---|---|---|---|",
        f"| push of the whole history | {data['push_seconds']['median']:.2f} s | "
        f"{data['push_direct_seconds']['median']:.2f} s | {ratio('push_ratio')} |",
        f"| clone / download | {data['clone_seconds']['median']:.2f} s | "
        f"{data['clone_direct_seconds']['median']:.2f} s | {ratio('clone_ratio')} |",
        f"| bytes moved by push | {data['pushed_bytes'] / mb:.1f} MB | {data['file_bytes'] / mb:.1f} MB | unique "
        f"bytes of the history: {data['unique_bytes'] / mb:.1f} MB; held by the bucket: "
        f"{data['stored_bytes'] / mb:.1f} MB |",
    ])


if __name__ == "__main__":  # pragma: no cover
    folders = [Path(p) for p in sys.argv[1:]]
    if not folders:
        sys.exit("usage: python -m bench.object_storage VERSION_FOLDER...")
    print(render(run(folders)))
