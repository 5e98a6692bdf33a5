"""``merge``: three-way merge of adapter versions against their merge base, exact for LoRA.

The plan is made from blob ids first (nothing is read for what did not change on both sides), then the
combinations are computed in memory (``merge_plan.py``), and only when there is no conflict is anything
written: new blobs, the snapshot, the merge commit (through :func:`~adaptvc.ops.record.record`, two
parents, compare-and-swap on the branch), then the work tree. A refusal therefore leaves the store, HEAD
and the work tree as they were. What is merged and how is described in ``merge_plan.py`` and
``docs/merge.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ..errors import AdaptvcError, InvalidInputError, UncommittedChangesError, UntrackedFileError
from ..objects import BasePin, Commit, Snapshot
from ..peft_layout import CONFIG_NAME, is_training_state
from ..progress import SILENT, Progress
from ..refnames import HEADS
from ..storage.base import ObjectStore, Refs
from . import graph
from .merge_plan import (
    EMPTY,
    LOSSY,
    STRATEGIES,
    Combined,
    Conflict,
    MergeError,
    MergeOptions,
    Merger,
    Plan,
    build_snapshot,
    merge_snapshots,
    qualified,
    stored_config,
)
from .record import Target, head_target, record

if TYPE_CHECKING:
    from .worktree import WorkTree

class MergeConflictError(MergeError):
    """Units changed on both sides that cannot be combined; ``result`` lists them (nothing was written)."""

    def __init__(self, result: MergeResult) -> None:
        self.result = result
        shown = ", ".join(f"{c.name} ({c.reason})" for c in result.conflicts[:3])
        more = f" and {len(result.conflicts) - 3} more" if len(result.conflicts) > 3 else ""
        super().__init__(f"merge conflict in {len(result.conflicts)} place(s): {shown}{more}; nothing was written: "
                         "choose a side with --strategy ours|theirs or --ours GLOB / --theirs GLOB")


@dataclass(frozen=True)
class MergeResult:
    """What a merge did (or would do: ``id`` is None when it was refused). ``to_json()`` is the documented
    ``merge --json`` shape."""

    id: str | None
    parents: tuple[str, ...]
    merge_base: str | None
    fast_forward: bool
    strategy: str
    unchanged: tuple[str, ...] = ()
    ours: tuple[str, ...] = ()
    theirs: tuple[str, ...] = ()
    combined: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    details: tuple[Combined, ...] = ()
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "parents": list(self.parents), "merge_base": self.merge_base,
                "fast_forward": self.fast_forward, "strategy": self.strategy,
                "modules": {"unchanged": list(self.unchanged), "ours": list(self.ours), "theirs": list(self.theirs),
                            "combined": list(self.combined)},
                "conflicts": [c.to_json() for c in self.conflicts]}


# -- merge, the operation -----------------------------------------------------------------------------------------
def check_bases(ours: Commit, theirs: Commit) -> None:
    """Refuse to merge versions pinned to different base models."""
    a, b = ours.base, theirs.base
    if (a.name_or_path, a.revision) != (b.name_or_path, b.revision) and a.name_or_path and b.name_or_path:
        raise MergeError(f"different base models: ours is pinned to {a.describe()}, theirs to {b.describe()}; "
                         "adapters of different bases cannot be merged")
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise MergeError(f"different base model fingerprints ({a.fingerprint[:12]} and {b.fingerprint[:12]}): "
                         "the two versions were trained on different weights of "
                         f"{a.describe()}; they cannot be merged")


def _merged_pin(ours: Commit, theirs: Commit) -> BasePin:
    a, b = ours.base, theirs.base
    if a.name_or_path is None and b.name_or_path is not None:
        return b
    if a.fingerprint is None and b.fingerprint is not None:
        return BasePin(a.name_or_path, a.revision, b.fingerprint, a.local_path)
    return a


def merge_metadata(kind: str, base: str | None, bases: list[str], theirs: str, opt: MergeOptions, plan: Plan,
              approx: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {"base": base, "theirs": theirs, "strategy": opt.strategy}
    if len(bases) > 1:
        info["bases"] = bases
    if opt.strategy in LOSSY:
        info.update({"weights": list(opt.weights or (1.0, 1.0)), "density": opt.density, "seed": opt.seed or 0})
    if opt.rank is not None:
        info["rank"] = opt.rank
    if opt.ours or opt.theirs:
        info["globs"] = {"ours": list(opt.ours), "theirs": list(opt.theirs)}
    info["counts"] = {"unchanged": len(plan.unchanged), "ours": len(plan.ours), "theirs": len(plan.theirs),
                      "combined": len(plan.combined)}
    info["combined"] = {d.name: d.to_json() for d in plan.details}
    if approx:
        info["approximate_scales"] = approx
    return {kind: info}


def require_clean(worktree: WorkTree, head: str | None, head_snapshot: Snapshot | None, config_of,
                  command: str = "merge") -> None:
    """Refuse (:class:`UncommittedChangesError`, as checkout and switch do) when the work tree differs from
    HEAD: a merge or revert rewrites it."""
    st = worktree.status(head, head_snapshot, config_of=config_of)
    if not st.clean:
        raise UncommittedChangesError(st.changed_paths, "commit them, or discard them with 'adaptvc reset --hard', "
                                                        f"then {command} again")


def config_reader(store: ObjectStore) -> Callable[[Snapshot, str], dict[str, Any]]:
    return lambda snapshot, path: stored_config(store, snapshot, path)


def snapshot_of(store: ObjectStore, commit: str | None) -> Snapshot | None:
    return store.read_snapshot(store.read_commit(commit).snapshot) if commit else None


def merge(store: ObjectStore, refs: Refs, worktree: WorkTree | None, theirs_rev: str, theirs: str, *,
          message: str | None = None, author: str, options: MergeOptions | None = None, ff: bool = True,
          ff_only: bool = False, allow_unrelated: bool = False, progress: Progress = SILENT) -> MergeResult:
    """Merge commit ``theirs`` (named ``theirs_rev`` in messages) into the current branch (or detached HEAD).

    Fast-forwards when the current branch is an ancestor of ``theirs`` (unless ``ff=False``); with
    ``ff_only``, anything else is refused. Otherwise makes a merge commit with two parents, whose metadata
    records the merge base, the strategy and each combined module's rank and residual; then moves the work
    tree (which must be clean) to it. Raises :class:`MergeConflictError` (``.result`` lists the conflicts)
    or :class:`MergeError` before anything is written."""
    options = (options or MergeOptions()).check()
    target = head_target(refs)
    ours = target.expected
    config_of = config_reader(store)
    if ours == theirs or (ours is not None and graph.is_ancestor(store, theirs, ours)):
        return MergeResult(ours, tuple(store.read_commit(ours).parents) if ours else (), theirs, False,
                           options.strategy, message="already up to date")
    ours_snapshot = snapshot_of(store, ours)
    if worktree is not None:
        require_clean(worktree, ours, ours_snapshot, config_of)
    can_ff = ours is None or graph.is_ancestor(store, ours, theirs)
    if can_ff and (ff or ours is None):
        return _fast_forward(store, refs, worktree, target, theirs, theirs_rev, options, ours_snapshot, progress)
    if ff_only:
        raise MergeError(f"not possible to fast-forward to {theirs_rev}: the branches have diverged; merge without "
                         "--ff-only")
    assert ours is not None
    ours_commit, theirs_commit = store.read_commit(ours), store.read_commit(theirs)
    check_bases(ours_commit, theirs_commit)
    bases = graph.merge_bases(store, ours, theirs)
    if not bases and not allow_unrelated:
        raise MergeError(f"refusing to merge unrelated histories: HEAD and {theirs_rev} have no common ancestor "
                         "(--allow-unrelated merges against an empty adapter)")
    base = bases[0] if bases else None
    merger, plan = merge_snapshots(store, snapshot_of(store, base), ours_snapshot or EMPTY,
                                   snapshot_of(store, theirs) or EMPTY, options)
    result = MergeResult(None, (ours, theirs), base, False, options.strategy, tuple(plan.unchanged),
                         tuple(plan.ours), tuple(plan.theirs), tuple(plan.combined), tuple(plan.conflicts),
                         tuple(plan.details))
    check_globs(options, plan, merger)
    if plan.conflicts:
        raise MergeConflictError(result)
    try:
        snapshot, approx = build_snapshot(store, merger, plan)
        if worktree is not None:
            check_untracked(worktree, ours_snapshot, snapshot)
    except BaseException:
        store.end_session()
        raise
    branch = target.ref[len(HEADS):] if target.ref else "HEAD"
    text = message if message is not None else f"Merge {theirs_rev} into {branch}"
    commit = record(store, refs, snapshot, parents=(ours, theirs), message=text, author=author, target=target,
                    base=_merged_pin(ours_commit, theirs_commit),
                    metadata=merge_metadata("merge", base, bases, theirs, options, plan, approx),
                    reflog=f"merge {theirs_rev}: Merge made by the '{options.strategy}' strategy")
    if worktree is not None:
        move_worktree(worktree, ours_snapshot, snapshot, ours, config_of, progress)
    return MergeResult(commit.id, (ours, theirs), base, False, options.strategy, tuple(plan.unchanged),
                       tuple(plan.ours), tuple(plan.theirs), tuple(plan.combined), (), tuple(plan.details),
                       message=f"Merge made by the '{options.strategy}' strategy")


def check_globs(options: MergeOptions, plan: Plan, merger: Merger) -> None:
    """A --ours/--theirs glob that names nothing in the merge is a typo: say so."""
    names: set[str] = set()
    for side in (merger.o, merger.a, merger.b):
        names.update(side.tensors)
        names.update(side.files)
        for folder, cfg in side.configs.items():
            names.update(f"{qualified(folder, CONFIG_NAME)}:{k}" for k in cfg)
    names.update(plan.unchanged + plan.ours + plan.theirs + plan.combined)
    for g in (*options.ours, *options.theirs):
        if not any(fnmatchcase(n, g) for n in names):
            raise InvalidInputError(f"glob {g!r}", "matches no module, tensor, config key or file of the merge")


def check_untracked(worktree: WorkTree, current: Snapshot | None, target: Snapshot) -> None:
    tracked = {f.path for f in current.files if not is_training_state(f.path)} if current else set()
    conflicts = worktree.untracked_conflicts(tracked, target.without(is_training_state))
    if conflicts:
        raise UntrackedFileError(conflicts)


def move_worktree(worktree: WorkTree, current: Snapshot | None, target: Snapshot, head: str | None, config_of,
                   progress: Progress) -> None:
    try:
        worktree.update(current, target, False, head, progress, config_of)
    except AdaptvcError as e:
        raise AdaptvcError(f"the merge is recorded, but the work tree could not be updated ({e}); run "
                           "'adaptvc reset --hard HEAD' to write it") from None


def _fast_forward(store: ObjectStore, refs: Refs, worktree: WorkTree | None, target: Target, theirs: str,
                  theirs_rev: str, options: MergeOptions, ours_snapshot: Snapshot | None,
                  progress: Progress) -> MergeResult:
    new_snapshot = snapshot_of(store, theirs)
    assert new_snapshot is not None
    if worktree is not None:
        check_untracked(worktree, ours_snapshot, new_snapshot)
    note = f"merge {theirs_rev}: Fast-forward"
    if target.ref is not None:
        refs.set_if_equals(target.ref, target.expected, theirs, note)
    else:
        refs.set_head(theirs, note, expected=target.expected)
    if worktree is not None:
        move_worktree(worktree, ours_snapshot, new_snapshot, target.expected, config_reader(store), progress)
    return MergeResult(theirs, tuple(store.read_commit(theirs).parents), target.expected, True, options.strategy,
                       message="Fast-forward")


def merge_base(store: ObjectStore, a: str, b: str, all_bases: bool = False) -> list[str]:
    """The best common ancestor of two commits (all of them with ``all_bases``), newest first."""
    bases = graph.merge_bases(store, a, b)
    return bases if all_bases else bases[:1]


def parse_weights(text: str) -> tuple[float, float]:
    """``"0.7,0.3"`` -> (0.7, 0.3), for ``--weights``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InvalidInputError(f"--weights {text[:40]!r}", "must be two numbers: OURS,THEIRS") from None
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"--weights {text[:40]!r}", "must be two finite numbers: OURS,THEIRS")
    return values  # type: ignore[return-value]


__all__ = ["EMPTY", "LOSSY", "STRATEGIES", "Combined", "Conflict", "MergeConflictError", "MergeError",
           "MergeOptions", "MergeResult", "build_snapshot", "check_bases", "merge", "merge_base", "merge_snapshots",
           "parse_weights", "stored_config"]
