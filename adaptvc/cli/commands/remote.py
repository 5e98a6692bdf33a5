"""Commands that talk to remotes: remote, push, fetch, pull, clone."""

from __future__ import annotations

import click

from ...remotes.registry import default_clone_folder, looks_like_url, normalise
from ...repository import Repository
from ...sync import SyncResult
from ..context import State, pass_state
from ..options import TEXT, json_option, quiet_option
from ..paths import PathFromC, remote_arg
from ..progress import BarProgress
from ..render import echo_json, human_bytes, short


def _report(result: SyncResult, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
        return
    for ref, (old, new) in result.updated.items():
        click.echo(f"  {short(old) if old else '(new)'}..{short(new)}  {ref}")
    moved = f" ({human_bytes(result.bytes)} transferred)" if result.bytes else ""
    click.echo(f"{result.remote}: {result.message or 'done'}{moved}")


def _where(state: State, remote_name: str | None) -> str | None:
    """A configured remote's name as it is; a relative folder given instead, made absolute."""
    return remote_arg(state, remote_name)


@click.group(invoke_without_command=True)
@click.option("-v", "--verbose", is_flag=True, help="Show URLs.")
@click.pass_context
def remote(ctx: click.Context, verbose: bool) -> None:
    """List remotes; `remote add NAME URL`, `remote remove NAME`.

    URLs: hf://USER/REPO (the Hugging Face Hub), s3://BUCKET/PREFIX (S3 or any S3-compatible service,
    AWS_ENDPOINT_URL), az://CONTAINER/PREFIX (Azure Blob), a folder path or file://PATH (a bare store).
    """
    if ctx.invoked_subcommand is None:
        for name, url in ctx.obj.repo.remotes().items():
            click.echo(f"{name}\t{url}" if verbose else name)


@remote.command("add")
@click.argument("name", type=TEXT)
@click.argument("url", type=TEXT)
@pass_state
def remote_add(state: State, name: str, url: str) -> None:
    """Add a remote: hf://USER/REPO, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX or a folder.

    Credentials come from the standard chains (HF_TOKEN or `hf auth login`; AWS environment, profile or
    role; AZURE_STORAGE_CONNECTION_STRING or the Azure identity chain), never from the URL."""
    url = normalise(url, state.cwd)  # a relative folder, pinned so it works from anywhere
    state.repo.add_remote(name, url)
    click.echo(f"added remote {name}: {url}")


@remote.command("remove")
@click.argument("name", type=TEXT)
@pass_state
def remote_remove(state: State, name: str) -> None:
    """Remove a remote (and its remote-tracking branches)."""
    state.repo.remove_remote(name)
    click.echo(f"removed remote {name}")


@click.command()
@click.argument("remote_name", type=TEXT, metavar="[REMOTE]", required=False)
@click.argument("branches", type=TEXT, nargs=-1)
@click.option("--tags", is_flag=True, help="Also push every tag.")
@click.option("--private", is_flag=True, help="Create the Hub repository as private when it does not exist.")
@json_option
@quiet_option
@pass_state
def push(state: State, remote_name: str | None, branches: tuple[str, ...], tags: bool, private: bool,
         as_json: bool, quiet: bool) -> None:
    """Send versions to a remote (the current branch by default); only fast-forwards."""
    result = state.repo.push(_where(state, remote_name), list(branches) or None, tags=tags, private=private,
                             progress=BarProgress(not quiet))
    _report(result, as_json)


@click.command()
@click.argument("remote_name", type=TEXT, metavar="[REMOTE]", required=False)
@json_option
@quiet_option
@pass_state
def fetch(state: State, remote_name: str | None, as_json: bool, quiet: bool) -> None:
    """Bring the remote's new versions into the store (the work tree is not touched)."""
    _report(state.repo.fetch(_where(state, remote_name), progress=BarProgress(not quiet)), as_json)


@click.command()
@click.argument("remote_name", type=TEXT, metavar="[REMOTE]", required=False)
@click.option("-f", "--force", is_flag=True, help="Discard uncommitted changes in the work tree.")
@json_option
@quiet_option
@pass_state
def pull(state: State, remote_name: str | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Fetch, then fast-forward the current branch and the work tree."""
    _report(state.repo.pull(_where(state, remote_name), force=force, progress=BarProgress(not quiet)), as_json)


@click.command()
@click.argument("url", type=TEXT)
@click.argument("directory", required=False, type=PathFromC(file_okay=False))
@click.option("--revision", "-r", type=TEXT, help="Check out this version instead of the default branch.")
@quiet_option
@pass_state
def clone(state: State, url: str, directory: str | None, revision: str | None, quiet: bool) -> None:
    """Copy a remote's whole history into a new repository and check out its default branch."""
    url = normalise(url, state.cwd)
    target = state.path(directory) if directory else state.path(default_clone_folder(url))
    repo = Repository.clone(url, target, revision=revision, progress=BarProgress(not quiet))
    click.echo(f"cloned {url} into {repo.work_tree} ({_clone_summary(repo, revision)})")


def _clone_summary(repo: Repository, revision: str | None) -> str:
    """``3 versions on main`` / ``1 version; HEAD detached at v1``: every version the clone holds (what its
    branches, tags and remote-tracking branches reach), and where HEAD is."""
    from ...ops.graph import walk
    from ...refnames import REMOTES

    head = repo.head()
    tips = {*repo.branches().values(), *repo.tags().values(), *repo.refs.list(REMOTES).values()}
    if head:
        tips.add(head)
    n = sum(1 for _ in walk(repo.store, sorted(tips)))
    branch = repo.current_branch()
    where = f" on {branch}" if branch else f"; HEAD detached at {revision or short(head or '')}"
    return f"{n} version{'' if n == 1 else 's'}{where}"


@click.command("ls-remote")
@click.argument("remote_name", type=TEXT, metavar="[REMOTE]", required=False)
@json_option
@pass_state
def ls_remote(state: State, remote_name: str | None, as_json: bool) -> None:
    """List the branches and tags of a remote (a configured name or a URL), as it holds them now."""
    from ...errors import NotARepositoryError
    from ...remotes import open_remote
    from ...sync import choose_remote

    try:
        repo = state.repo
    except NotARepositoryError:
        if remote_name is None or not looks_like_url(remote_name):
            raise
        target = open_remote(normalise(remote_name, state.cwd), "origin")  # a URL works outside a repository
        label = remote_name
    else:
        choice = choose_remote(repo.remotes(), _where(state, remote_name), repo.store)
        target, label = choice.remote, choice.label
    if not target.exists():
        from ..context import CliError

        raise CliError(f"nothing at {label}{target.missing_hint()}")
    refs = target.list_refs()
    if as_json:
        echo_json({"remote": label, "refs": refs, "skipped": list(target.skipped_refs)})
        return
    for ref, oid in sorted(refs.items()):
        click.echo(f"{oid}\t{ref}")
    for ref in target.skipped_refs:
        click.echo(f"skipped {ref!r}: not a valid ref name", err=True)


COMMANDS = [remote, push, fetch, pull, clone, ls_remote]
