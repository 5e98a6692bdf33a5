"""Commands that keep a store healthy: fsck, gc, unlock, upgrade."""

from __future__ import annotations

import click

from ..context import CliError, State, pass_state
from ..options import TEXT, Duration, json_option
from ..paths import remote_arg
from ..progress import BarProgress
from ..render import echo_json, human_bytes, short


@click.command()
@click.option("--remote", "remote_name", type=TEXT, metavar="REMOTE",
              help="Check a remote instead: every object its branches and tags reach is there and intact.")
@json_option
@pass_state
def fsck(state: State, remote_name: str | None, as_json: bool) -> None:
    """Re-hash every object and check that the history is complete; exit 1 if anything is wrong."""
    if remote_name is not None:
        remote_report = state.repo.fsck_remote(remote_arg(state, remote_name), progress=BarProgress())
        if as_json:
            echo_json(remote_report.to_dict())
        else:
            for p in remote_report.problems:
                by = "; ".join(p.referenced_by) or "-"
                click.echo(f"bad {p.kind} {p.oid}: {p.problem}\n    needed by: {by}")
            counts = (f"{remote_report.refs} refs, {remote_report.commits} commits, {remote_report.objects} objects "
                      f"({human_bytes(remote_report.bytes_verified)})")
            click.echo(f"ok: {counts} verified" if remote_report.ok
                       else f"{remote_report.location}: not whole ({counts} checked)")
        if not remote_report.ok:
            raise CliError(f"{len(remote_report.problems)} problem(s) on the remote")
        return
    report = state.repo.fsck()
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"checked {report.objects} objects: {report.reachable} reachable, {report.dangling} dangling")
        for p in report.problems:
            by = "; ".join(p.referenced_by) or "nothing (unreachable)"
            needed = "" if p.kind in ("pack", "copy") else f"\n    needed by: {by}"
            click.echo(f"bad {p.kind} {p.oid}: {p.problem}{needed}")
        for lock in report.stale_locks:
            click.echo(f"stale lock {lock.path} (process {lock.pid} is gone): run 'adaptvc unlock'")
        if report.pack_debris:
            click.echo(f"{len(report.pack_debris)} file(s) in objects/pack left by a killed commit or gc (harmless; "
                       "'adaptvc gc' removes them once older than its grace period)")
        if report.ok:
            click.echo("ok")
    if not report.ok:
        raise CliError(report.summary())


@click.command()
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--grace", type=Duration(), default="1h", show_default=True,
              help="Keep unreachable objects younger than this (protects commits in progress).")
@click.option("--aggressive", is_flag=True, help="Also compress stored tensors (lossless; ids do not change).")
@json_option
@pass_state
def gc(state: State, dry_run: bool, grace: float, aggressive: bool, as_json: bool) -> None:
    """Remove objects that no branch, tag or reflog entry reaches."""
    report = state.repo.gc(grace_seconds=grace, dry_run=dry_run, aggressive=aggressive, progress=BarProgress())
    if as_json:
        echo_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.removed)} unreachable objects ({human_bytes(report.bytes_freed)}); "
               f"kept {report.reachable} reachable and {report.kept_recent} recent")
    for oid in report.removed[:20] if dry_run else []:
        click.echo(f"  {short(oid, 32)}")
    if report.bytes_compressed:
        click.echo(f"compressed stored tensors: {human_bytes(report.bytes_compressed)} saved")


@click.command()
@click.option("-f", "--force", is_flag=True, help="Remove every lock, even one a running process may hold.")
@pass_state
def unlock(state: State, force: bool) -> None:
    """Clear ref locks left behind by a killed adaptvc process."""
    refs = state.repo.refs
    removed = refs.clear_stale_locks(force=force)
    for lock in removed:
        click.echo(f"removed {lock.path}")
    live = [lock for lock in refs.locks()]
    for lock in live:
        click.echo(f"kept {lock.path}: process {lock.pid} on {lock.host} is still running (use --force if not)")
    if not removed and not live:
        click.echo("no locks")




@click.command()
@json_option
@pass_state
def upgrade(state: State, as_json: bool) -> None:
    """Move the store to the newest format (format 2: packs); safe to interrupt and run again."""
    result = state.repo.upgrade(progress=BarProgress())
    if as_json:
        echo_json(result)
    elif result["from"] == result["to"]:
        click.echo(f"already format {result['to']}")
    else:
        click.echo(f"upgraded from format {result['from']} to {result['to']}: {result['objects']} objects packed")

COMMANDS = [fsck, gc, unlock, upgrade]
