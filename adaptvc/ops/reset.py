"""``reset [--soft|--mixed|--hard] REV``: move the current branch (or a detached HEAD) to REV.

The move is a compare-and-swap with a reflog entry, like every move of a ref, so a concurrent commit is never
lost silently and ``adaptvc reflog`` still knows where the branch was. adaptvc has no staging area:
``--soft`` and ``--mixed`` (the default) both leave the work tree as it is, which then shows as changes
against the new HEAD. ``--hard`` also rewrites the tracked files of the work tree to REV (files HEAD tracked
and REV lacks are removed); a file HEAD does not track is never touched, and one REV would write over is
refused before anything moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import EmptyRepositoryError, InvalidInputError, NoWorkTreeError
from ..progress import SILENT, Progress
from ..refnames import HEADS
from ..storage.base import ObjectStore, Refs
from .merge import check_untracked, config_reader, snapshot_of
from .record import head_target

if TYPE_CHECKING:
    from .worktree import WorkTree

MODES = ("soft", "mixed", "hard")


@dataclass(frozen=True)
class ResetResult:
    ref: str          # the branch moved (``refs/heads/main``) or ``HEAD`` when detached
    old: str
    new: str
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "mode": self.mode}


def reset(store: ObjectStore, refs: Refs, worktree: WorkTree | None, rev: str, commit_id: str, mode: str = "mixed",
          progress: Progress = SILENT) -> ResetResult:
    """Move the current branch to ``commit_id`` (named ``rev`` in the reflog); with ``mode="hard"``, also
    the tracked files of ``worktree`` (None: the repository has no work tree, and ``hard`` is refused)."""
    if mode not in MODES:
        raise InvalidInputError(f"reset mode {mode!r}", "must be soft, mixed or hard")
    if mode == "hard" and worktree is None:  # else --hard would quietly do what --soft does
        raise NoWorkTreeError(f"'reset --hard' has no files to rewrite: move the branch with 'adaptvc reset --soft "
                              f"{rev}'")
    target = head_target(refs)
    old = target.expected
    if old is None:
        raise EmptyRepositoryError()
    old_snapshot = snapshot_of(store, old)
    new_snapshot = snapshot_of(store, commit_id)
    assert new_snapshot is not None
    if mode == "hard" and worktree is not None:
        check_untracked(worktree, old_snapshot, new_snapshot)
    note = f"reset: moving to {rev}"
    if target.ref is not None:
        refs.set_if_equals(target.ref, old, commit_id, note)
    else:
        refs.set_head(commit_id, note, expected=old)
    if mode == "hard" and worktree is not None:
        worktree.update(old_snapshot, new_snapshot, True, old, progress, config_reader(store))
    return ResetResult(target.ref or "HEAD", old, commit_id, mode)


def branch_label(result: ResetResult) -> str:
    return result.ref[len(HEADS):] if result.ref.startswith(HEADS) else "HEAD"
