"""The one writer of history: a snapshot becomes a commit, and a ref moves to it.

This module alone owns the write order — objects durable, then the commit durable, then the ref moved by
compare-and-swap, then the reflog — so a crash at any point leaves the old state or the new one, and a
concurrent writer is refused rather than overwritten. Commits from a folder, from a live model, from a Hub
import, from tensors computed in memory (a merge) all end here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import ObjectNotFoundError
from ..objects import BasePin, Commit, Snapshot
from ..parsing import check_json_value, check_text
from ..storage.base import ObjectStore, Refs


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Target:
    """Where a new commit goes: a ref to move (``refs/heads/x``) or, with ``ref=None``, a detached HEAD;
    ``expected`` is what the ref (or HEAD) must hold for the move to happen (None: nothing yet)."""

    ref: str | None
    expected: str | None


def head_target(refs: Refs) -> Target:
    """The current branch (or detached HEAD) and the commit it is at: where ``commit`` records."""
    return Target(refs.head_target(), refs.head_commit())


def check_inputs(message: str, author: str, metadata: dict[str, Any] | None) -> None:
    """Refuse, before anything is written, text that could not be stored (not Unicode, nested too deep)."""
    check_text(message, "the commit message")
    check_text(author, "the author")
    check_json_value(metadata or {}, "the metadata")


def write_commit(store: ObjectStore, snapshot: Snapshot, *, parents: Sequence[str], message: str, author: str,
                 base: BasePin | None = None, provenance: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, timestamp: str | None = None) -> Commit:
    """Objects durable, then the commit durable (no ref moves: :func:`record` does that, or a fetch that
    imports commits names them with remote-tracking refs afterwards)."""
    check_inputs(message, author, metadata)
    for f in snapshot.files:
        for oid in f.blobs():
            if not store.freshen(oid):
                raise ObjectNotFoundError(oid)
    store.put_snapshot(snapshot)
    store.flush()
    commit = Commit(snapshot=snapshot.id, parents=tuple(parents), message=message, author=author,
                    timestamp=timestamp or now(), base=base or BasePin(), provenance=provenance,
                    metadata=dict(metadata or {}))
    store.put_commit(commit)
    store.flush()
    return commit


def record(store: ObjectStore, refs: Refs, snapshot: Snapshot, *, parents: Sequence[str], message: str,
           author: str, target: Target, base: BasePin | None = None, provenance: dict[str, Any] | None = None,
           metadata: dict[str, Any] | None = None, timestamp: str | None = None, reflog: str | None = None,
           ) -> Commit:
    """Record ``snapshot`` (whose blobs are already in ``store``) as a commit with these ``parents`` and move
    ``target`` to it. Raises RefMovedError when the target moved meanwhile (nothing is lost: the objects stay
    until gc, and the caller may try again)."""
    try:
        commit = write_commit(store, snapshot, parents=parents, message=message, author=author, base=base,
                              provenance=provenance, metadata=metadata, timestamp=timestamp)
        note = reflog or f"commit{'' if parents else ' (initial)'}{' (merge)' if len(parents) > 1 else ''}: " \
                         f"{commit.summary}"
        if target.ref is not None:
            refs.set_if_equals(target.ref, target.expected, commit.id, note)
        else:
            refs.set_head(commit.id, note, expected=target.expected)
    finally:
        store.end_session()
    return commit
