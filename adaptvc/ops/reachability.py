"""Which objects the history reaches: from every branch, tag, remote-tracking branch and HEAD (the live
roots), and from every reflog entry (deleted refs included).

A problem below a live root makes what is reachable uncertain (gc then deletes nothing); a problem reached
only through an old reflog entry is reported by fsck but never blocks gc.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import AdaptvcError, ObjectNotFoundError, without_fsck_advice
from ..hashing import is_object_id
from ..refnames import HEADS, REMOTES, TAGS
from ..storage.base import ObjectStore, Refs


@dataclass
class Problem:
    """An object the history needs that is missing, corrupt or unreadable (or a ref that cannot be read)."""

    oid: str
    kind: str  # what it should be: commit, snapshot, blob; or "ref"
    problem: str
    referenced_by: list[str] = field(default_factory=list)
    live: bool = True  # reached from a live ref, not only from a reflog entry

    def __post_init__(self) -> None:
        self.problem = without_fsck_advice(self.problem)  # a line of fsck's report: "run fsck" would loop

    def to_dict(self) -> dict[str, object]:
        return {"oid": self.oid, "kind": self.kind, "problem": self.problem, "referenced_by": self.referenced_by,
                "live": self.live}


@dataclass
class Reachable:
    objects: dict[str, str] = field(default_factory=dict)  # oid -> kind
    problems: dict[str, Problem] = field(default_factory=dict)

    @property
    def live_problems(self) -> list[Problem]:
        return [p for p in self.problems.values() if p.live]


def live_roots(refs: Refs) -> dict[str, list[str]]:
    """``{commit id: [refs naming it]}`` for HEAD and every readable branch, tag and remote-tracking branch."""
    out: dict[str, list[str]] = {}
    try:
        head = refs.head_commit()
    except AdaptvcError:
        head = None
    if head:
        out.setdefault(head, []).append("HEAD")
    for prefix in (HEADS, TAGS, REMOTES):
        for name, oid in refs.list(prefix).items():
            out.setdefault(oid, []).append(prefix + name)
    return out


def reflog_roots(refs: Refs) -> dict[str, list[str]]:
    """``{object id: [reflog entries naming it]}`` (``HEAD@{2}``, ``refs/heads/x@{0}``)."""
    out: dict[str, list[str]] = {}
    for ref in ["HEAD", *refs.reflog_refs()]:
        try:
            entries = refs.reflog(ref)
        except (AdaptvcError, OSError):
            continue
        for i, e in enumerate(entries):
            for oid in (e.new, e.old):
                if isinstance(oid, str) and is_object_id(oid):
                    out.setdefault(oid, []).append(f"{ref}@{{{i}}}")
    return out


def roots(refs: Refs) -> dict[str, list[str]]:
    out = live_roots(refs)
    for oid, names in reflog_roots(refs).items():
        out.setdefault(oid, []).extend(names)
    return out


def _walk_from(store: ObjectStore, start: Iterator[tuple[str, str, str]], result: Reachable, live: bool,
               verify_blobs: bool) -> None:
    def note(oid: str, kind: str, problem: str, by: str) -> None:
        p = result.problems.setdefault(oid, Problem(oid, kind, problem, live=live))
        if by not in p.referenced_by:
            p.referenced_by.append(by)

    stack = list(start)
    while stack:
        oid, kind, by = stack.pop()
        if oid in result.objects:
            continue
        if oid in result.problems:
            note(oid, kind, result.problems[oid].problem, by)
            continue
        try:
            if kind == "commit":
                commit = store.read_commit(oid)
                stack.append((commit.snapshot, "snapshot", f"commit {oid}"))
                stack.extend((p, "commit", f"commit {oid}") for p in commit.parents)
            elif kind == "snapshot":
                snap = store.read_snapshot(oid)
                for f in snap.files:
                    stack.extend((b, "blob", f"snapshot {oid} ({f.path})") for b in f.blobs())
            elif verify_blobs:
                for _ in store.iter_chunks(oid):
                    pass
            elif not store.has(oid):
                raise FileNotFoundError(oid)
        except (AdaptvcError, FileNotFoundError, OSError) as e:
            missing = isinstance(e, (FileNotFoundError, ObjectNotFoundError))
            note(oid, kind, "missing" if missing else str(e), by)
            continue
        result.objects[oid] = kind


def walk(store: ObjectStore, refs: Refs, verify_blobs: bool = False) -> Reachable:
    """Follow commits, parents, snapshots and blobs from the live roots, then from the reflogs. Commits and
    snapshots are always re-hashed (they are read); blobs only with ``verify_blobs`` (fsck)."""
    result = Reachable()
    live = live_roots(refs)
    _walk_from(store, ((oid, "commit", names[0]) for oid, names in live.items()), result, True, verify_blobs)
    logged = {oid: names for oid, names in reflog_roots(refs).items() if oid not in live}
    _walk_from(store, ((oid, "commit", names[0]) for oid, names in logged.items()), result, False, verify_blobs)
    return result
