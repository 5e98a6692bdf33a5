"""``revert REV``: a new commit that undoes what REV changed — a three-way merge of the current version with
REV's parent, against REV itself as the merge base.

With O = REV, ours = HEAD and theirs = REV's parent, a unit REV changed and nobody touched since is taken from
the parent (its very blobs), a unit REV did not change keeps HEAD's value, and a LoRA module changed both by
REV and later is ΔW_HEAD + ΔW_parent − ΔW_REV exactly (concatenated factors, as in a merge). The commit has
one parent (HEAD); its metadata names the reverted commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EmptyRepositoryError, NothingToCommitError
from ..objects import Commit
from ..peft_layout import is_training_state
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore, Refs
from .merge import (
    EMPTY,
    MergeConflictError,
    MergeError,
    MergeOptions,
    MergeResult,
    build_snapshot,
    check_bases,
    check_globs,
    check_untracked,
    config_reader,
    merge_metadata,
    merge_snapshots,
    move_worktree,
    require_clean,
    snapshot_of,
)
from .record import head_target, record

if TYPE_CHECKING:
    from .worktree import WorkTree


def revert(store: ObjectStore, refs: Refs, worktree: WorkTree | None, rev: str, commit_id: str, *, author: str,
           message: str | None = None, mainline: int | None = None, options: MergeOptions | None = None,
           progress: Progress = SILENT) -> MergeResult:
    """Record a commit on the current branch that undoes commit ``commit_id`` (named ``rev`` in messages).
    A merge commit needs ``mainline`` (1-based: which parent's side to keep, as ``git revert -m``).
    Conflicts raise :class:`~adaptvc.ops.merge.MergeConflictError` before anything is written."""
    options = (options or MergeOptions()).check()
    target = head_target(refs)
    head = target.expected
    if head is None:
        raise EmptyRepositoryError()
    reverted = store.read_commit(commit_id)
    parents = reverted.parents
    if len(parents) > 1 and mainline is None:
        raise MergeError(f"{rev} is a merge commit: say which parent's side to keep with -m N (1 to {len(parents)})")
    if mainline is not None and not 1 <= mainline <= max(1, len(parents)):
        raise MergeError(f"-m {mainline}: {rev} has {len(parents)} parent(s)")
    parent = parents[(mainline or 1) - 1] if parents else None
    head_snapshot = snapshot_of(store, head)
    config_of = config_reader(store)
    if worktree is not None:
        require_clean(worktree, head, head_snapshot, config_of, "revert")
    head_commit = store.read_commit(head)
    if parent is not None:
        check_bases(head_commit, store.read_commit(parent))
    merger, plan = merge_snapshots(store, store.read_snapshot(reverted.snapshot), head_snapshot or EMPTY,
                                   snapshot_of(store, parent) or EMPTY, options)
    result = MergeResult(None, (head,), commit_id, False, options.strategy, tuple(plan.unchanged), tuple(plan.ours),
                         tuple(plan.theirs), tuple(plan.combined), tuple(plan.conflicts), tuple(plan.details))
    check_globs(options, plan, merger)
    if plan.conflicts:
        raise MergeConflictError(result)
    try:
        snapshot, approx = build_snapshot(store, merger, plan)
        if head_snapshot is not None and snapshot.id == head_snapshot.without(is_training_state).id:
            raise NothingToCommitError(head)
        if worktree is not None:
            check_untracked(worktree, head_snapshot, snapshot)
    except BaseException:
        store.end_session()
        raise
    text = message if message is not None else \
        f'Revert "{reverted.summary}"\n\nThis reverts commit {commit_id}.'
    metadata = merge_metadata("revert", commit_id, [], parent or "", options, plan, approx)
    metadata["revert"]["commit"] = metadata["revert"].pop("base")
    metadata["revert"]["parent"] = metadata["revert"].pop("theirs") or None
    commit: Commit = record(store, refs, snapshot, parents=(head,), message=text, author=author, target=target,
                            base=head_commit.base, metadata=metadata, reflog=f"revert: {reverted.summary}")
    if worktree is not None:
        move_worktree(worktree, head_snapshot, snapshot, head, config_of, progress)
    return MergeResult(commit.id, (head,), commit_id, False, options.strategy, tuple(plan.unchanged),
                       tuple(plan.ours), tuple(plan.theirs), tuple(plan.combined), (), tuple(plan.details),
                       message=f"reverted {commit_id[:12]}")

