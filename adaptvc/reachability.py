"""Which objects the history reaches, from every ref, HEAD and every reflog entry (deleted refs included)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import AdaptvcError, ObjectNotFoundError
from .hashing import is_object_id
from .refs import HEADS, TAGS, Refs
from .store import ObjectStore


@dataclass
class Problem:
    """An object the history needs that is missing, corrupt or unreadable."""

    oid: str
    kind: str  # what it should be: commit, snapshot or blob
    problem: str
    referenced_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"oid": self.oid, "kind": self.kind, "problem": self.problem, "referenced_by": self.referenced_by}


@dataclass
class Reachable:
    objects: dict[str, str] = field(default_factory=dict)  # oid -> kind
    problems: dict[str, Problem] = field(default_factory=dict)


def _ref_names(refs: Refs) -> Iterator[str]:
    yield "HEAD"
    for prefix in (HEADS, TAGS):
        for name in refs.list(prefix):
            yield prefix + name


def _reflog_refs(refs: Refs) -> Iterator[str]:
    """Every ref that has a reflog, including refs that were deleted since."""
    logs = refs.root / "logs"
    for dirpath, _, filenames in os.walk(logs):
        for fn in filenames:
            rel = os.path.relpath(os.path.join(dirpath, fn), logs).replace(os.sep, "/")
            yield rel


def roots(refs: Refs) -> dict[str, list[str]]:
    """``{commit id: [where it is named]}`` for every ref, HEAD and reflog entry."""
    out: dict[str, list[str]] = {}
    for ref in _ref_names(refs):
        try:
            oid = refs.head_commit() if ref == "HEAD" else refs.read(ref)
        except AdaptvcError:
            continue
        if oid:
            out.setdefault(oid, []).append(ref)
    for ref in _reflog_refs(refs):
        try:
            entries = refs.reflog(ref)
        except (AdaptvcError, OSError):
            continue
        for i, e in enumerate(entries):
            for oid in (e.new, e.old):
                if isinstance(oid, str) and is_object_id(oid):
                    out.setdefault(oid, []).append(f"{ref}@{{{i}}}")
    return out


def walk(store: ObjectStore, refs: Refs, verify_blobs: bool = False) -> Reachable:
    """Follow commits, parents, snapshots and blobs from :func:`roots`. Commits and snapshots are always
    re-hashed (they are read); blobs only with ``verify_blobs`` (fsck), else just checked to exist."""
    result = Reachable()

    def note(oid: str, kind: str, problem: str, by: str) -> None:
        p = result.problems.setdefault(oid, Problem(oid, kind, problem))
        if by not in p.referenced_by:
            p.referenced_by.append(by)

    stack = [(oid, "commit", names[0]) for oid, names in roots(refs).items()]
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
    return result
