"""Commands that join and rewind history: merge, merge-base, revert, reset, restore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ...errors import InvalidInputError, NoWorkTreeError
from ...ops.merge import STRATEGIES, MergeConflictError, MergeOptions, MergeResult, parse_weights
from ..context import CliError, State, pass_state
from ..options import TEXT, json_option, quiet_option
from ..progress import BarProgress
from ..render import echo_json, short, style

if TYPE_CHECKING:
    from ...ops.worktree import WorkTree


def _worktree(state: State) -> WorkTree | None:
    """The work tree the command updates; None in a repository without one (``init --no-work-tree``)."""
    repo = state.repo
    return repo.worktree if repo.has_work_tree else None


def _author(state: State) -> str:
    from ...provenance.code import default_author

    return default_author(state.repo.work_tree)


def _options(strategy: str, ours: tuple[str, ...], theirs: tuple[str, ...], rank: int | None, weights: str | None,
             density: float | None, seed: int | None) -> MergeOptions:
    return MergeOptions(strategy, tuple(ours), tuple(theirs), rank, parse_weights(weights) if weights else None,
                        density, seed).check()


def _short_name(name: str) -> str:
    from ...peft_layout import short_module_name

    folder, _, rest = name.rpartition("/")
    return f"{folder}/{short_module_name(rest)}" if folder else short_module_name(name)


def _print_result(result: MergeResult) -> None:
    counts = ", ".join(f"{len(names)} {label}" for label, names in
                       (("combined", result.combined), ("ours", result.ours), ("theirs", result.theirs),
                        ("unchanged", result.unchanged)) if names)
    click.echo(f"  modules and tensors: {counts or 'none'}")
    for d in result.details[:20]:
        how = "exact" if d.exact else (f"residual {d.residual:.3g}" if d.residual is not None else "approximate")
        rank = f"rank {d.rank}, " if d.rank is not None else ""
        click.echo(f"  combined {_short_name(d.name)}: {rank}{how}")
    if len(result.details) > 20:
        click.echo(f"  ... and {len(result.details) - 20} more (see 'adaptvc show --json')")


def _conflict(e: MergeConflictError, as_json: bool) -> None:
    if as_json:
        echo_json(e.result.to_json())
    else:
        for c in e.result.conflicts[:50]:
            click.echo(f"CONFLICT ({c.kind}): {c.name}: {c.reason}", err=True)
    raise CliError(str(e)) from None


def _strategy_options(f):
    """--strategy, --ours, --theirs (applied last to first: click lists options in the order they are written)."""
    f = click.option("--theirs", "theirs", type=TEXT, multiple=True, metavar="GLOB",
                     help="Units changed on both sides that take their side.")(f)
    f = click.option("--ours", "ours", type=TEXT, multiple=True, metavar="GLOB",
                     help="Units (module, tensor, adapter_config.json:KEY, file) changed on both sides that take "
                          "our side.")(f)
    return click.option("--strategy", "-s", type=click.Choice(STRATEGIES), default="combine", show_default=True,
                        help="How units changed on both sides are merged: the exact combination, one side, or a "
                             "lossy strategy (PEFT's ties, dare_ties, dare_linear, svd; needs the torch extra).")(f)


@click.command()
@click.argument("rev", type=TEXT)
@click.option("-m", "--message", type=TEXT, help="Message of the merge commit (default: Merge REV into BRANCH).")
@_strategy_options
@click.option("--rank", type=click.IntRange(min=1), help="Reduce combined LoRA modules to this rank (records the "
                                                          "residual).")
@click.option("--weights", type=TEXT, metavar="OURS,THEIRS", help="Weights of the two sides (lossy strategies).")
@click.option("--density", type=click.FloatRange(0, 1, min_open=True), help="Fraction of values kept (ties, dare).")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the random pruning (dare; recorded).")
@click.option("--ff-only", is_flag=True, help="Refuse unless the merge is a fast-forward.")
@click.option("--no-ff", is_flag=True, help="Make a merge commit even when a fast-forward is possible.")
@click.option("--allow-unrelated", is_flag=True, help="Merge histories with no common ancestor (against an empty "
                                                      "adapter).")
@json_option
@quiet_option
@pass_state
def merge(state: State, rev: str, message: str | None, strategy: str, ours: tuple[str, ...], theirs: tuple[str, ...],
          rank: int | None, weights: str | None, density: float | None, seed: int | None, ff_only: bool, no_ff: bool,
          allow_unrelated: bool, as_json: bool, quiet: bool) -> None:
    """Merge version REV into the current branch: three-way against the merge base, exact for LoRA.

    \b
    A LoRA module changed on one side takes that side's tensors; changed on both, it becomes
    ΔW_ours + ΔW_theirs − ΔW_base exactly (concatenated factors, stated in rank_pattern/alpha_pattern).
    Conflicts (DoRA magnitudes, LoHa/LoKr factors, config keys) are refused before anything is written.
    """
    from ...ops.merge import merge as do_merge

    if ff_only and no_ff:
        raise click.UsageError("--ff-only and --no-ff contradict each other")
    repo = state.repo
    options = _options(strategy, ours, theirs, rank, weights, density, seed)
    theirs_id = repo.resolve(rev)
    old = repo.head()
    try:
        result = do_merge(repo.store, repo.refs, _worktree(state), rev, theirs_id, message=message,
                          author=_author(state), options=options, ff=not no_ff, ff_only=ff_only,
                          allow_unrelated=allow_unrelated, progress=BarProgress(not quiet and not as_json))
    except MergeConflictError as e:
        _conflict(e, as_json)
        return
    if as_json:
        echo_json(result.to_json())
        return
    if result.message == "already up to date":
        click.echo("Already up to date.")
    elif result.fast_forward:
        click.echo(f"Updating {short(old)}..{short(result.id)}\nFast-forward")
    else:
        branch = repo.current_branch() or "detached HEAD"
        click.echo(f"[{branch} {style(short(result.id), fg='yellow')}] {result.message} "
                   f"(base {short(result.merge_base) if result.merge_base else 'none'})")
        _print_result(result)


@click.command("merge-base")
@click.argument("a", type=TEXT)
@click.argument("b", type=TEXT)
@click.option("--all", "all_bases", is_flag=True, help="Every best common ancestor, not only the newest.")
@click.option("--is-ancestor", is_flag=True, help="Print nothing; exit 0 when A is an ancestor of B, else 1.")
@pass_state
def merge_base(state: State, a: str, b: str, all_bases: bool, is_ancestor: bool) -> None:
    """The best common ancestor of two versions (what merge combines against)."""
    from ...ops.graph import is_ancestor as ancestor_of
    from ...ops.merge import merge_base as bases_of

    repo = state.repo
    ia, ib = repo.resolve(a), repo.resolve(b)
    if is_ancestor:
        raise click.exceptions.Exit(0 if ancestor_of(repo.store, ia, ib) else 1)
    found = bases_of(repo.store, ia, ib, all_bases)
    if not found:
        raise CliError(f"{a} and {b} have no common ancestor")
    for oid in found:
        click.echo(oid)


@click.command()
@click.argument("rev", type=TEXT)
@click.option("-m", "--mainline", type=click.IntRange(min=1), help="For a merge commit: the parent whose side to "
                                                                    "keep (1 = the branch merged into).")
@click.option("--message", type=TEXT, help="Message of the new commit (default: Revert \"…\").")
@_strategy_options
@click.option("--rank", type=click.IntRange(min=1), help="Reduce combined LoRA modules to this rank.")
@json_option
@quiet_option
@pass_state
def revert(state: State, rev: str, mainline: int | None, message: str | None, strategy: str, ours: tuple[str, ...],
           theirs: tuple[str, ...], rank: int | None, as_json: bool, quiet: bool) -> None:
    """Record a new commit that undoes what REV changed (a three-way merge with REV's parent)."""
    from ...ops.revert import revert as do_revert

    if strategy not in ("combine", "ours", "theirs"):
        raise click.UsageError("revert takes --strategy combine, ours or theirs")
    repo = state.repo
    target = repo.resolve(rev)
    try:
        result = do_revert(repo.store, repo.refs, _worktree(state), rev, target, author=_author(state), message=message,
                           mainline=mainline, options=MergeOptions(strategy, tuple(ours), tuple(theirs), rank),
                           progress=BarProgress(not quiet and not as_json))
    except MergeConflictError as e:
        _conflict(e, as_json)
        return
    if as_json:
        echo_json(result.to_json())
        return
    branch = repo.current_branch() or "detached HEAD"
    click.echo(f"[{branch} {style(short(result.id), fg='yellow')}] {repo.read_commit(result.id or 'HEAD').summary}")
    _print_result(result)


@click.command()
@click.argument("rev", type=TEXT, default="HEAD")
@click.option("--soft", "mode", flag_value="soft", help="Move the branch only.")
@click.option("--mixed", "mode", flag_value="mixed", default=True,
              help="Move the branch only (the default; adaptvc has no staging area).")
@click.option("--hard", "mode", flag_value="hard",
              help="Also rewrite the tracked files of the work tree (untracked files are never touched).")
@json_option
@quiet_option
@pass_state
def reset(state: State, rev: str, mode: str, as_json: bool, quiet: bool) -> None:
    """Move the current branch (or a detached HEAD) to REV; with --hard, the work tree too."""
    from ...ops.reset import reset as do_reset

    repo = state.repo
    result = do_reset(repo.store, repo.refs, _worktree(state), rev, repo.resolve(rev), mode,
                      progress=BarProgress(not quiet and not as_json))
    if as_json:
        echo_json(result.to_json())
        return
    summary = repo.read_commit(result.new).summary
    if mode == "hard":
        click.echo(f"HEAD is now at {style(short(result.new), fg='yellow')} {summary}")
    else:
        click.echo(f"{'HEAD' if result.ref == 'HEAD' else result.ref.split('/', 2)[2]} is now at "
                   f"{style(short(result.new), fg='yellow')} {summary} (was {short(result.old)}); the work tree is "
                   "unchanged: see 'adaptvc status'")


def _work_tree_path(state: State, arg: str) -> str:
    """A PATH argument (relative to the current folder, or absolute) as a path of the work tree."""
    repo = state.repo
    here = Path(os.path.normpath(state.cwd.resolve() / arg))
    try:
        rel = here.relative_to(repo.work_tree)
    except ValueError:
        raise InvalidInputError(f"path {arg!r}", f"is outside the work tree {repo.work_tree}") from None
    return rel.as_posix()


@click.command()
@click.argument("paths", type=TEXT, nargs=-1)
@click.option("--source", "-s", type=TEXT, default="HEAD", show_default=True, help="The version to restore from.")
@click.option("--tensor", "tensors", type=TEXT, multiple=True, metavar="GLOB",
              help="Restore only these tensors of adapter_model.safetensors (the others stay as they are).")
@json_option
@quiet_option
@pass_state
def restore(state: State, paths: tuple[str, ...], source: str, tensors: tuple[str, ...], as_json: bool,
            quiet: bool) -> None:
    """Write files, or some tensors, of a version into the work tree (HEAD does not move).

    \b
    adaptvc restore --source v1 adapter_config.json
    adaptvc restore --source v1 --tensor '*layers.3.*'
    """
    from ...ops.restore import restore as do_restore

    repo = state.repo
    if not repo.has_work_tree:
        raise NoWorkTreeError(f"write files of a version into a folder with 'adaptvc checkout {source} -o DIR'")
    oid = repo.resolve(source)
    head = repo.head()
    head_snapshot = repo.show(head).snapshot if head else None
    rels = [p if any(c in p for c in "*?[") else _work_tree_path(state, p) for p in paths]
    result = do_restore(repo.store, repo.work_tree, oid, repo.show(oid).snapshot, head_snapshot, rels,
                        list(tensors), label=source, progress=BarProgress(not quiet and not as_json))
    if as_json:
        echo_json(result.to_json())
        return
    for p in result.files:
        click.echo(f"restored {p} from {source}")
    for label, names in (("restored", result.tensors_restored), ("added", result.tensors_added),
                         ("removed", result.tensors_removed)):
        if names:
            click.echo(f"{label} {len(names)} tensor(s) from {source}: " + ", ".join(names[:5]) +
                       (", ..." if len(names) > 5 else ""))
    if not (result.files or result.tensors_restored or result.tensors_added or result.tensors_removed):
        click.echo("nothing to restore: the work tree already holds those files")


COMMANDS = [merge, merge_base, revert, reset, restore]
