"""Commands that read history: log, show, reflog."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..context import State, pass_state
from ..options import TEXT, json_option
from ..render import (
    commit_text,
    decoration,
    echo_json,
    human_bytes,
    short,
    style,
    table,
)


@click.command()
@click.argument("rev", type=TEXT, required=False)
@click.option("-n", "--max-count", type=click.IntRange(min=0), help="Show at most this many commits.")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@json_option
@pass_state
def log(state: State, rev: str | None, max_count: int | None, oneline: bool, as_json: bool) -> None:
    """Show the history from REV (default HEAD), newest first."""
    repo = state.repo
    commits = repo.log(rev, max_count=max_count)
    if as_json:
        echo_json([c.to_json() for c in commits])
        return
    if not commits:
        click.echo("No commits yet; run 'adaptvc commit -m MESSAGE'")
        return
    labels = repo.decorations()
    if oneline:
        for c in commits:
            click.echo(f"{style(short(c.id), fg='yellow')}{decoration(labels.get(c.id, []))} {c.summary}")
        return
    click.echo("\n\n".join(commit_text(c, labels.get(c.id, [])) for c in commits))


@click.command()
@click.argument("rev", type=TEXT, default="HEAD")
@json_option
@pass_state
def show(state: State, rev: str, as_json: bool) -> None:
    """Show one version: its commit, files and tensors."""
    repo = state.repo
    version = repo.show(rev)
    if as_json:
        echo_json(version.to_json())
        return
    click.echo(commit_text(version.commit, repo.decorations().get(version.commit.id, [])))
    snap = version.snapshot
    click.echo("\nFiles:")
    click.echo(table([[f.path, human_bytes(f.size), short(f.hash, 16)] for f in snap.files],
                     ["path", "size", "hash"], right={1}))
    tensors = snap.tensors()
    total = sum(t.size for _, t in tensors)
    click.echo(f"\nTensors ({len(tensors)}, {human_bytes(total)}):")
    click.echo(table([[name, t.dtype, "×".join(map(str, t.shape)) or "scalar", short(t.blob, 16)]
                      for name, t in tensors], ["name", "dtype", "shape", "hash"]))


@click.command()
@click.argument("ref", type=TEXT, default="HEAD")
@json_option
@pass_state
def reflog(state: State, ref: str, as_json: bool) -> None:
    """Show where a ref (HEAD, a branch or a tag) pointed over time, newest first."""
    repo = state.repo
    full = ref if ref == "HEAD" or ref.startswith("refs/") else (
        f"refs/tags/{ref}" if ref in repo.tags() and ref not in repo.branches() else f"refs/heads/{ref}")
    entries = repo.refs.reflog(full)
    if as_json:
        echo_json([e.to_json() for e in entries])
        return
    for i, e in enumerate(entries):
        t = datetime.fromtimestamp(e.time, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{style(short(e.new), fg='yellow')} {ref}@{{{i}}} {t} {e.message}")


COMMANDS = [log, show, reflog]
