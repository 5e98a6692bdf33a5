"""``adaptvc fsck``: re-hash every object, check that the history reaches nothing missing, check HEAD and every
ref, and say who needs what."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import AdaptvcError
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore, Refs
from .reachability import Problem, walk


@dataclass
class FsckReport:
    objects: int = 0
    reachable: int = 0
    dangling: int = 0
    problems: list[Problem] = field(default_factory=list)
    stale_locks: list[Any] = field(default_factory=list)
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


def ref_problems(refs: Refs) -> list[Problem]:
    """HEAD and every ref that cannot be read, as problems of kind ``ref``."""
    out = []
    try:
        if refs.head_raw() is None:
            out.append(Problem("", "ref", "HEAD is missing; point it at a branch with 'adaptvc switch BRANCH'",
                               ["HEAD"]))
        else:
            refs.head_target()
    except AdaptvcError as e:
        out.append(Problem("", "ref", f"HEAD: {e}", ["HEAD"]))
    for bad in refs.bad_refs():
        out.append(Problem("", "ref", f"{bad.ref}: {bad.problem}", [bad.ref]))
    return out


def fsck(store: ObjectStore, refs: Refs, progress: Progress = SILENT) -> FsckReport:
    """Check the whole store. Reachable objects that are missing or corrupt are reported with every
    commit/snapshot/ref that refers to them; unreachable objects are re-hashed too."""
    ids = list(store.iter_ids())
    progress.begin("fsck", len(ids))
    try:
        reach = walk(store, refs, verify_blobs=True)
        report = FsckReport(objects=len(ids), reachable=len(reach.objects))
        report.problems = ref_problems(refs) + sorted(reach.problems.values(), key=lambda p: p.oid)
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
    report.temp_files = store.temporary_count()
    return report
