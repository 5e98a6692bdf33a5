"""Commands that hand a version to an inference server: export, deploy, deployed."""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import AdaptvcError, NotARepositoryError
from ...serving.deploy import deploy as deploy_version
from ...serving.deploy import deployed as deployed_report
from ...serving.export import export_to_bucket, export_to_folder, is_bucket_url
from ...serving.layout import check_name
from ..context import CliError, State, pass_state
from ..options import TEXT, json_option, quiet_option
from ..paths import PathFromC
from ..progress import BarProgress
from ..render import echo_json, human_bytes, short

_SERVED_BASE_HELP = ("Rewrite base_model_name_or_path in the exported config to exactly this string (vLLM's "
                     "filesystem resolver compares it with --model); the only change made to any file, recorded "
                     "in adaptvc.json.")
_FORCE_HELP = "Export even when a base model at hand does not match the adapter."


def _default_name(state: State) -> str:
    name = state.repo.work_tree.name
    try:
        return check_name(name)
    except AdaptvcError:
        raise CliError(f"the repository folder's name {name!r} cannot be a serving name; give one with --name") \
            from None


@click.command()
@click.argument("rev", type=TEXT)
@click.argument("dest", type=TEXT)
@click.option("--name", type=TEXT, help="Serving name (default: the repository folder's name).")
@click.option("--served-base", type=TEXT, metavar="NAME", help=_SERVED_BASE_HELP)
@click.option("-f", "--force", is_flag=True, help=_FORCE_HELP)
@json_option
@quiet_option
@pass_state
def export(state: State, rev: str, dest: str, name: str | None, served_base: str | None, force: bool,
           as_json: bool, quiet: bool) -> None:
    """Write version REV into DEST/NAME@ID/ (a folder, or s3://BUCKET/PREFIX/): immutable, complete, verified.

    The folder holds the adapter's files byte for byte as committed, and adaptvc.json recording the commit,
    the base-model pin and every file's hash. An existing folder of that name is never replaced.
    """
    repo = state.repo
    name = name if name is not None else _default_name(state)
    commit = repo.read_commit(rev)
    kwargs = dict(served_base=served_base, force=force, cache_file=repo.fingerprint_cache,
                  progress=BarProgress(not quiet))
    if is_bucket_url(dest):
        result = export_to_bucket(repo.store, commit, dest, name, **kwargs)  # type: ignore[arg-type]
    else:
        result = export_to_folder(repo.store, commit, _serving_folder(state, dest), name, **kwargs)  # type: ignore[arg-type]
    if as_json:
        echo_json(result.to_dict())
        return
    if result.written:
        click.echo(f"Exported {short(result.commit)} ({commit.summary}) to {result.location} "
                   f"[{human_bytes(result.bytes)}]")
    else:
        click.echo(f"{result.location} already holds {short(result.commit)} ({commit.summary}); verified, unchanged")
    _details(result.rewritten, result.served_base, result.bases_checked)


def _serving_folder(state: State, path: str) -> Path:
    """DEST or DIR: never the work tree (the export would be committed as a sub-adapter) nor the store."""
    folder = state.path(path)
    resolved = folder.resolve()
    repo = state.repo
    if resolved == repo.work_tree or resolved == repo.admin_dir or repo.admin_dir in resolved.parents:
        raise CliError(f"{folder} is the repository's {'work tree' if resolved == repo.work_tree else 'store'}: an "
                       "export there would be committed with the adapter; choose another folder")
    return folder


def _details(rewritten: tuple[str, ...], served_base: str | None, bases: tuple[str, ...]) -> None:
    for path in rewritten:
        click.echo(f"  {path}: base_model_name_or_path rewritten to {served_base!r} (recorded in adaptvc.json)")
    for base in bases:
        click.echo(f"  adapter modules checked against the base at hand: {base}")


@click.command()
@click.argument("rev", type=TEXT)
@click.argument("directory", metavar="DIR", type=PathFromC(file_okay=False))
@click.option("--name", type=TEXT, required=True, help="Serving name: DIR/NAME becomes a link to DIR/NAME@ID.")
@click.option("--keep", type=int, metavar="N",
              help="Then remove this name's older version folders beyond N (the one deployed counts; N >= 1).")
@click.option("--served-base", type=TEXT, metavar="NAME", help=_SERVED_BASE_HELP)
@click.option("-f", "--force", is_flag=True, help=_FORCE_HELP)
@json_option
@quiet_option
@pass_state
def deploy(state: State, rev: str, directory: str, name: str, keep: int | None, served_base: str | None,
           force: bool, as_json: bool, quiet: bool) -> None:
    """Export REV to DIR/NAME@ID/ (verified), then switch the link DIR/NAME to it in one atomic rename.

    A reader resolving DIR/NAME sees the old version or the new one, complete, never a mix; no version folder
    is modified once written.
    """
    repo = state.repo
    commit = repo.read_commit(rev)
    result = deploy_version(repo.store, commit, _serving_folder(state, directory), name, keep=keep,
                            served_base=served_base, force=force, cache_file=repo.fingerprint_cache,
                            progress=BarProgress(not quiet))
    if as_json:
        echo_json(result.to_dict())
        return
    was = f" (was {result.previous})" if result.previous and result.previous != f"{name}@{result.version}" else ""
    verb = "wrote and verified" if result.written else "verified existing"
    click.echo(f"Deployed {short(result.commit)} ({commit.summary}): {result.link} -> {name}@{result.version}{was}; "
               f"{verb} {result.folder}")
    _details((), result.served_base, result.bases_checked)
    if result.served_base is not None:
        click.echo(f"  base_model_name_or_path is {result.served_base!r} (recorded in adaptvc.json)")
    for folder in result.removed:
        click.echo(f"  removed {folder}")
    for folder, why in result.left:
        click.echo(f"  left {folder} in place: {why}", err=True)


@click.command()
@click.argument("directory", metavar="DIR", type=PathFromC(file_okay=False, exists=True))
@json_option
@pass_state
def deployed(state: State, directory: str, as_json: bool) -> None:
    """List the serving names in DIR, the version each points at, and whether every version folder is intact
    (its files match its adaptvc.json, and the commit in this repository when run inside one). Exit 1 when
    something is not."""
    try:
        store = state.repo.store
    except NotARepositoryError:
        store = None
    report = deployed_report(state.path(directory), store)
    if as_json:
        echo_json(report.to_dict())
    else:
        if not report.names:
            click.echo(f"nothing deployed in {report.root}")
        for n in report.names:
            click.echo(f"{n.name} -> {n.current or '(no link)'}")
            for p in n.problems:
                click.echo(f"  problem: {p}")
            for v in n.versions:
                mark = "*" if v.current else " "
                what = f"{short(v.commit)} {v.message!r}" if v.commit else "(no adaptvc record)"
                if v.served_base is not None:
                    what += f" served base {v.served_base!r}"
                if v.intact:
                    status = f"ok (checked against {'the store' if v.checked == 'store' else 'its record'})"
                else:
                    status = "NOT INTACT: " + "; ".join(v.problems[:3]) + (" …" if len(v.problems) > 3 else "")
                click.echo(f"  {mark} {v.folder}  {what}  {status}")
    bad = [v.folder for n in report.names for v in n.versions if not v.intact] + \
        [n.name for n in report.names if n.problems]
    if bad:
        raise CliError(f"not intact: {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}")


COMMANDS = [export, deploy, deployed]
