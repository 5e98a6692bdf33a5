"""``adaptvc fsck``: re-hash every object, check the history reaches nothing missing, report who needs what."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .errors import AdaptvcError
from .progress import SILENT, Progress
from .reachability import Problem, walk
from .refs import LockInfo, Refs
from .store import ObjectStore


@dataclass
class FsckReport:
    objects: int = 0
    reachable: int = 0
    dangling: int = 0
    problems: list[Problem] = field(default_factory=list)
    stale_locks: list[LockInfo] = field(default_factory=list)
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "objects": self.objects, "reachable": self.reachable, "dangling": self.dangling,
            "problems": [p.to_dict() for p in self.problems],
            "stale_locks": [str(lock.path) for lock in self.stale_locks],
            "temp_files": self.temp_files,
        }


def fsck(store: ObjectStore, refs: Refs, progress: Progress = SILENT) -> FsckReport:
    """Check the whole store. Reachable objects that are missing or corrupt are reported with every
    commit/snapshot/ref that refers to them; unreachable objects are re-hashed too."""
    ids = list(store.iter_ids())
    progress.begin("fsck", len(ids))
    try:
        reach = walk(store, refs, verify_blobs=True)
        report = FsckReport(objects=len(ids), reachable=len(reach.objects))
        report.problems = sorted(reach.problems.values(), key=lambda p: p.oid)
        progress.update(len(reach.objects))
        for oid in ids:
            if oid in reach.objects or oid in reach.problems:
                continue
            report.dangling += 1
            try:
                for _ in store.iter_chunks(oid):
                    pass
            except (AdaptvcError, OSError) as e:
                report.problems.append(Problem(oid, "unreachable", str(e)))
            progress.update(1)
    finally:
        progress.end()
    report.stale_locks = [lock for lock in refs.locks() if lock.stale]
    try:
        report.temp_files = len(os.listdir(store.tmp_dir))
    except FileNotFoundError:
        report.temp_files = 0
    return report
