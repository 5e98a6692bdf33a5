"""Commands that name versions: tag, branch, switch."""

from __future__ import annotations

import click

from ..context import State, pass_state
from ..options import TEXT, json_option
from ..progress import BarProgress
from ..render import echo_json, short


@click.command()
@click.argument("name", type=TEXT, required=False)
@click.argument("rev", type=TEXT, default="HEAD")
@click.option("-d", "--delete", is_flag=True, help="Delete the tag.")
@click.option("-f", "--force", is_flag=True, help="Move an existing tag.")
@json_option
@pass_state
def tag(state: State, name: str | None, rev: str, delete: bool, force: bool, as_json: bool) -> None:
    """Name a version: `adaptvc tag v1 [REV]`. Without NAME, list tags."""
    repo = state.repo
    if name is None:
        if delete:
            raise click.UsageError("tag -d needs a NAME")
        tags = repo.tags()
        if as_json:
            echo_json([{"name": n, "id": oid} for n, oid in tags.items()])
        else:
            for n, oid in tags.items():
                click.echo(f"{n}\t{short(oid)}\t{repo.store.read_commit(oid).summary}")
        return
    if delete:
        oid = repo.delete_tag(name)
        if as_json:
            echo_json({"name": name, "id": oid, "deleted": True})
        else:
            click.echo(f"Deleted tag {name} (was {short(oid)})")
        return
    oid = repo.tag(name, rev, force=force)
    if as_json:
        echo_json({"name": name, "id": oid})
    else:
        click.echo(f"Tagged {short(oid)} as {name}")


@click.command()
@click.argument("name", type=TEXT, required=False)
@click.argument("rev", type=TEXT, default="HEAD")
@click.option("-d", "--delete", is_flag=True, help="Delete the branch.")
@click.option("-f", "--force", is_flag=True, help="Move an existing branch.")
@json_option
@pass_state
def branch(state: State, name: str | None, rev: str, delete: bool, force: bool, as_json: bool) -> None:
    """Create a branch at REV: `adaptvc branch exp [REV]`. Without NAME, list branches."""
    repo = state.repo
    if name is None:
        if delete:
            raise click.UsageError("branch -d needs a NAME")
        current = repo.current_branch()
        branches = repo.branches()
        if as_json:
            echo_json([{"name": n, "id": oid, "current": n == current} for n, oid in branches.items()])
        else:
            for n, oid in branches.items():
                click.echo(f"{'*' if n == current else ' '} {n}\t{short(oid)}")
            if current is not None and current not in branches:
                click.echo(f"* {current}\t(no commits yet)")
        return
    if delete:
        oid = repo.delete_branch(name)
        if as_json:
            echo_json({"name": name, "id": oid, "deleted": True})
        else:
            click.echo(f"Deleted branch {name} (was {short(oid)}); 'adaptvc reflog {name}' still knows it")
        return
    oid = repo.branch(name, rev, force=force)
    if as_json:
        echo_json({"name": name, "id": oid})
    else:
        click.echo(f"Created branch {name} at {short(oid)}")


@click.command()
@click.argument("name", type=TEXT)
@click.option("-c", "--create", is_flag=True, help="Create the branch at HEAD, then switch to it.")
@click.option("-f", "--force", is_flag=True, help="Discard uncommitted changes in the work tree.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@pass_state
def switch(state: State, name: str, create: bool, force: bool, quiet: bool) -> None:
    """Switch the work tree to branch NAME."""
    state.repo.switch(name, create=create, force=force, progress=BarProgress(not quiet))
    click.echo(f"Switched to {'a new ' if create else ''}branch {name}")


COMMANDS = [tag, branch, switch]
