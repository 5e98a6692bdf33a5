"""Commands that tie adapter versions to the code's git repository: hooks, pin."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...errors import AdaptvcError
from ...integrations import githooks
from ...provenance import pin as pinlock
from ..context import State, pass_state
from ..options import TEXT
from ..render import echo_json, short


def _git_top(state: State) -> Path:
    top = githooks.git_root(state.cwd)
    if top is None:
        raise AdaptvcError(f"{state.cwd.resolve()} is not inside a git repository (or git is not installed)")
    return top


@click.group()
def hooks() -> None:
    """Install git hooks: pre-commit keeps adapter weights out of git; post-checkout and post-merge restore
    the adapter version pinned in adaptvc.lock."""


@hooks.command("install")
@pass_state
def hooks_install(state: State) -> None:
    """Install the hooks in the git repository containing the current folder."""
    for path in githooks.install_hooks(_git_top(state)):
        click.echo(f"installed {path}")


@hooks.command("uninstall")
@pass_state
def hooks_uninstall(state: State) -> None:
    """Remove the hooks adaptvc installed (others are left alone)."""
    removed = githooks.uninstall_hooks(_git_top(state))
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("no adaptvc hooks installed")


@hooks.command("run", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("name", type=TEXT)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def hooks_run(state: State, name: str, args: tuple[str, ...]) -> None:
    """Run one hook (what the installed hook scripts call)."""
    code, message = githooks.run_hook(name, list(args), state.cwd)
    if message:
        click.echo(message, err=True)
    sys.exit(code)


@click.command()
@click.argument("rev", type=TEXT, default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_state
def pin(state: State, rev: str, as_json: bool) -> None:
    """Write adaptvc.lock at the root of the code's git repository, naming adapter version REV."""
    repo = state.repo
    commit = repo.resolve(rev)
    top = githooks.git_root(repo.work_tree)
    if top is None:
        raise AdaptvcError(f"the adaptvc work tree {repo.work_tree} is not inside a git repository")
    path = pinlock.write_lock(top, repo.work_tree, commit, rev)
    if as_json:
        echo_json({"lock": str(path), "commit": commit, "rev": rev})
    else:
        click.echo(f"pinned {rev} ({short(commit)}) in {path}; commit it: git add {pinlock.LOCK_NAME}")


COMMANDS = [hooks, pin]
