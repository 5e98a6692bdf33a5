"""``adaptvc fsck --remote NAME``: is a remote whole? Every object reachable from its branches and tags must be
present and hash to its id; snapshots must decode (the adapter path rule) and declare the sizes their blobs
have. Takes the remote's object store and the refs it lists, so it runs on any remote that has a store (a
folder, a bucket)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import AdaptvcError, ObjectNotFoundError
from ..hashing import new_hasher
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore
from .reachability import Problem


@dataclass
class RemoteFsckReport:
    location: str
    refs: int = 0
    commits: int = 0
    objects: int = 0  # reachable objects checked (commits, snapshots, blobs)
    bytes_verified: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "location": self.location, "refs": self.refs, "commits": self.commits,
                "objects": self.objects, "bytes_verified": self.bytes_verified,
                "problems": [p.to_dict() for p in self.problems]}


def _describe(e: Exception) -> str:
    if isinstance(e, ObjectNotFoundError):
        return "missing"
    return str(e)


def fsck_remote_store(store: ObjectStore, refs: dict[str, str], skipped_refs: list[str] | None = None,
                      progress: Progress = SILENT, workers: int = 1, location: str = "") -> RemoteFsckReport:
    """Check everything ``refs`` reach in ``store``. Blobs are re-hashed by ``workers`` threads at once (use 1
    for a store whose reads share a buffer, such as a folder's)."""
    report = RemoteFsckReport(location or store.location, refs=len(refs))
    for ref in skipped_refs or []:
        report.problems.append(Problem("", "ref", f"{ref}: not a valid ref (bad name or content)", [ref]))
    by: dict[str, list[str]] = {}
    for ref, oid in sorted(refs.items()):
        by.setdefault(oid, []).append(ref)
    blobs: dict[str, tuple[int, str]] = {}  # blob -> (declared size, first snapshot naming it)
    seen: set[str] = set()
    stack = [(oid, ", ".join(names)) for oid, names in by.items()]
    while stack:
        oid, referrer = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            commit = store.read_commit(oid)
        except (AdaptvcError, OSError) as e:
            report.problems.append(Problem(oid, "commit", _describe(e), [referrer]))
            continue
        report.commits += 1
        report.objects += 1
        stack.extend((p, oid) for p in commit.parents)
        if commit.snapshot in seen:
            continue
        seen.add(commit.snapshot)
        try:
            snapshot = store.read_snapshot(commit.snapshot)
        except (AdaptvcError, OSError) as e:
            report.problems.append(Problem(commit.snapshot, "snapshot", _describe(e), [oid]))
            continue
        report.objects += 1
        for f in snapshot.files:
            parts = [(f.hash, f.size)] if f.layout is None else \
                [(f.layout.header, f.layout.header_size), *((t.blob, t.size) for t in f.layout.tensors)]
            for blob, size in parts:
                blobs.setdefault(blob, (size, commit.snapshot))
    total = sum(size for size, _ in blobs.values())
    lock = threading.Lock()
    progress.begin("fsck remote", total)

    def check(item: tuple[str, tuple[int, str]]) -> None:
        blob, (size, snapshot) = item
        h = new_hasher()
        n = 0
        problem = None
        try:
            for chunk in store.iter_chunks(blob, verify=False):
                h.update(chunk)
                step = min(len(chunk), size - n) if n < size else 0
                n += len(chunk)
                with lock:
                    if step:
                        progress.update(step)
                if n > size:
                    problem = f"holds more than the {size} bytes its snapshot declares"
                    break
            if problem is None and n != size:
                problem = f"holds {n} bytes, its snapshot declares {size}"
            elif problem is None and h.hexdigest() != blob:
                problem = f"corrupt: its bytes hash to {h.hexdigest()}"
        except (AdaptvcError, OSError) as e:
            problem = _describe(e)
        with lock:
            report.objects += 1
            if problem is None:
                report.bytes_verified += n
            else:
                report.problems.append(Problem(blob, "blob", problem, [snapshot]))

    try:
        if workers <= 1:
            for item in blobs.items():
                check(item)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adaptvc-fsck") as pool:
                list(pool.map(check, blobs.items()))
    finally:
        progress.end()
    report.problems.sort(key=lambda p: (p.kind, p.oid))
    return report
