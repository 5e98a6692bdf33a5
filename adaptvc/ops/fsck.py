"""``adaptvc fsck``: re-hash every object, check that the history reaches nothing missing, check HEAD and every
ref, and say who needs what.

In a store of packs every copy of every object is checked, not only the one a read would use: a corrupt
duplicate stops gc from consolidating the packs, so fsck names it (and its pack) even when another copy is
intact. A pack that cannot be used at all (its index fails its checks, its file is missing, cut short, a link,
a pipe) is a problem of its own, named. Debris of a killed commit or gc (a pack without index, temporary files)
is counted, not a problem: gc removes it.
"""

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
    #: in objects/pack: packs without an index and temporary files that a killed commit or gc left (harmless;
    #: gc removes them once older than its grace period)
    pack_debris: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line for the user: how many problems, and the first — a pack that cannot be used before anything
        else, since it explains the objects missing after it."""
        if not self.problems:
            return "ok"
        first = next((p for p in self.problems if p.kind == "pack" and p.oid.startswith(("pack-", "objects/"))),
                     self.problems[0])
        what = f"{first.kind} {first.oid}".strip()
        return (f"{len(self.problems)} bad object(s), first {what}: {first.problem}; the versions that need them "
                "cannot be checked out")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "objects": self.objects, "reachable": self.reachable, "dangling": self.dangling,
            "problems": [p.to_dict() for p in self.problems],
            "stale_locks": [str(lock.path) for lock in self.stale_locks],
            "temp_files": self.temp_files, "pack_debris": self.pack_debris,
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


def pack_problems(store: ObjectStore, already: list[Problem]) -> list[Problem]:
    """Every pack that cannot be used (kind ``pack``, named by the pack) and every corrupt copy of an object in
    a pack (kind ``copy``, its message names the pack), except what ``already`` says about the same copy.
    Nothing for a store without packs."""
    check = getattr(store, "check_packs", None)
    if check is None:
        return []
    out = []
    for p in check():
        if p.oid is None:
            out.append(Problem(p.pack, "pack", f"{p.problem} (the objects only it holds are unavailable)", live=False))
            continue
        if any(q.oid == p.oid and p.pack in q.problem for q in already):
            continue  # the walk reported this very copy
        where = "" if p.pack in p.problem else f" (its copy in {p.pack})"
        extra = "; another copy is intact ('adaptvc gc' keeps that one and drops this one)" if p.intact_elsewhere \
            else ""
        out.append(Problem(p.oid, "copy", f"{p.problem}{where}{extra}", live=False))
    return out


def fsck(store: ObjectStore, refs: Refs, progress: Progress = SILENT) -> FsckReport:
    """Check the whole store. Reachable objects that are missing or corrupt are reported with every
    commit/snapshot/ref that refers to them; unreachable objects are re-hashed too, and so is every copy of
    every object in a pack."""
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
        unreadable = sorted(getattr(store, "bad_packs", {}))
        if unreadable:  # say where a missing object may be
            for p in report.problems:
                if p.problem == "missing":
                    p.problem = f"missing (it may be in {', '.join(unreadable[:3])}, which cannot be read)"
        report.problems += pack_problems(store, report.problems)
    finally:
        progress.end()
    report.stale_locks = [lock for lock in refs.locks() if lock.stale]
    report.temp_files = store.temporary_count()
    debris = getattr(store, "pack_debris", None)
    report.pack_debris = debris() if debris is not None else []
    return report
