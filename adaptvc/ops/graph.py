"""Walks over the commit graph: history newest first, ancestry, merge bases, first-parent chains.

Every walk over parents lives here (log, push's fast-forward check, pull, merge, the Hub's chain of new
commits), so that a faster commit reader (a commit-graph cache) changes one module.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from ..objects import Commit
from ..storage.base import ObjectStore


def commit_time(commit: Commit) -> float:
    try:
        return datetime.fromisoformat(commit.timestamp).timestamp()
    except ValueError:
        return 0.0


def walk(store: ObjectStore, starts: Iterable[str], max_count: int | None = None,
         first_parent: bool = False) -> Iterator[Commit]:
    """Commits reachable from ``starts``, each once, newest first by commit time (as ``git log`` does)."""
    queue: list[tuple[float, int, Commit]] = []
    seen: set[str] = set()
    counter = 0
    for oid in starts:
        if oid not in seen:
            seen.add(oid)
            c = store.read_commit(oid)
            heapq.heappush(queue, (-commit_time(c), counter, c))
            counter += 1
    produced = 0
    while queue and (max_count is None or produced < max_count):
        _, _, commit = heapq.heappop(queue)
        yield commit
        produced += 1
        for p in commit.parents[:1] if first_parent else commit.parents:
            if p not in seen:
                seen.add(p)
                parent = store.read_commit(p)
                heapq.heappush(queue, (-commit_time(parent), counter, parent))
                counter += 1


def ancestors(store: ObjectStore, start: str, have: Callable[[str], bool] | None = None) -> set[str]:
    """``start`` and every commit it descends from (stopping where ``have`` says the store lacks one)."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        oid = stack.pop()
        if oid in seen or (have is not None and not have(oid)):
            continue
        seen.add(oid)
        stack.extend(store.read_commit(oid).parents)
    return seen


def is_ancestor(store: ObjectStore, old: str, new: str) -> bool:
    """True when commit ``old`` is ``new`` or one of its ancestors (commits missing locally end the walk)."""
    if old == new:
        return True
    seen: set[str] = set()
    stack = [new]
    while stack:
        oid = stack.pop()
        if oid in seen or not store.has(oid):
            continue
        seen.add(oid)
        for p in store.read_commit(oid).parents:
            if p == old:
                return True
            stack.append(p)
    return False


def merge_bases(store: ObjectStore, a: str, b: str) -> list[str]:
    """The best common ancestors of ``a`` and ``b`` (as ``git merge-base --all``): common ancestors that are
    not ancestors of another common ancestor. Sorted newest first."""
    parents: dict[str, tuple[str, ...]] = {}

    def parents_of(oid: str) -> tuple[str, ...]:
        if oid not in parents:
            parents[oid] = store.read_commit(oid).parents
        return parents[oid]

    def reach(starts: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(starts)
        while stack:
            oid = stack.pop()
            if oid not in seen:
                seen.add(oid)
                stack.extend(parents_of(oid))
        return seen

    common = reach([a]) & reach([b])
    # every ancestor of a common commit is common: the redundant ones are those below another common commit
    redundant = reach(p for c in common for p in parents_of(c))
    best = [c for c in common if c not in redundant]
    return sorted(best, key=lambda c: (-commit_time(store.read_commit(c)), c))


def first_parent_chain(store: ObjectStore, start: str, stop: Callable[[str], bool], limit: int | None = None,
                       ) -> list[str]:
    """Commits from ``start`` back along first parents until ``stop(oid)`` (exclusive), oldest first."""
    chain: list[str] = []
    oid: str | None = start
    while oid is not None and not stop(oid) and (limit is None or len(chain) < limit):
        chain.append(oid)
        parents = store.read_commit(oid).parents
        oid = parents[0] if parents else None
    chain.reverse()
    return chain


def closure(store: ObjectStore, commits: Iterable[str], have: Callable[[str], bool]) -> list[str]:
    """Objects reachable from ``commits`` that ``have(oid)`` says are missing, in a safe order: blobs, then
    snapshots, then commits oldest first. A commit the other side has is taken to come with its whole past
    (objects always travel before the commit that names them)."""
    blobs: list[str] = []
    snaps: list[str] = []
    new_commits: list[str] = []
    seen: set[str] = set()
    stack = list(commits)
    while stack:
        oid = stack.pop()
        if oid in seen or have(oid):
            continue
        seen.add(oid)
        commit = store.read_commit(oid)
        new_commits.append(oid)
        stack.extend(commit.parents)
        if commit.snapshot not in seen and not have(commit.snapshot):
            seen.add(commit.snapshot)
            snaps.append(commit.snapshot)
            for f in store.read_snapshot(commit.snapshot).files:
                for b in f.blobs():
                    if b not in seen and not have(b):
                        seen.add(b)
                        blobs.append(b)
    new_commits.reverse()  # parents before children
    return blobs + snaps + new_commits


def parents_first(commits: Iterable[str], parents_of: Callable[[str], Iterable[str]]) -> list[str]:
    """``commits`` ordered so that each comes after those of its parents that are among them (a loop, which
    content addressing makes impossible but a hostile store could claim, cannot make this spin)."""
    todo = set(commits)
    order: list[str] = []
    done: set[str] = set()
    opened: set[str] = set()
    for root in sorted(todo):
        stack = [(root, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                order.append(oid)
                continue
            if oid in opened:
                continue
            opened.add(oid)
            stack.append((oid, True))
            stack.extend((p, False) for p in parents_of(oid) if p in todo and p not in done)
    return order
