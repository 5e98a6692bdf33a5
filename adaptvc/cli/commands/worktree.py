"""Commands that move adapters between a folder and the store: init, commit, status, checkout, demo."""

from __future__ import annotations

import click

from ...parsing import JsonError, parse_json
from ...peft_layout import is_training_state
from ...repository import Repository
from ..context import CliError, State, pass_state
from ..options import TEXT, json_option, quiet_option
from ..paths import PathFromC
from ..progress import BarProgress
from ..render import echo_json, human_bytes, oneline, short, style


def _parse_meta(items: tuple[str, ...]) -> dict:
    meta: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        try:
            meta[key] = parse_json(value)
        except JsonError as e:
            if "nested" in str(e):
                raise CliError(f"--meta {key}: the value is {e}") from None
            meta[key] = value  # not JSON: kept as text
    return meta


@click.command()
@click.argument("path", type=PathFromC(file_okay=False), default=".")
@click.option("--base", type=TEXT,
              help="Base model name or path pinned for every commit (default: from the adapter's config).")
@click.option("--base-revision", type=TEXT, help="Revision of the base model (a Hub commit, branch or tag).")
@click.option("--branch", "-b", type=TEXT, default="main", show_default=True, help="Name of the first branch.")
@click.option("--no-work-tree", is_flag=True,
              help="Record versions made elsewhere only (commit --from, the Trainer callback): no adapter folder.")
@pass_state
def init(state: State, path: str, base: str | None, base_revision: str | None, branch: str,
         no_work_tree: bool) -> None:
    """Create an adaptvc repository (.adaptvc/) in PATH."""
    repo = Repository.init(state.path(path), base=base, base_revision=base_revision, branch=branch,
                           work_tree=not no_work_tree)
    click.echo(f"Initialised empty adaptvc repository in {repo.admin_dir}")


@click.command()
@click.option("-m", "--message", type=TEXT, required=True, help="What this version is.")
@click.option("--from", "source", type=PathFromC(file_okay=False),
              help="Commit the adapter in this folder instead of the work tree (e.g. out/checkpoint-500).")
@click.option("--base", type=TEXT, help="Base model name or path for this commit (overrides the adapter's config).")
@click.option("--base-revision", type=TEXT, help="Revision of the base model.")
@click.option("--meta", type=TEXT, multiple=True, metavar="KEY=VALUE",
              help="Metadata to record (the value is parsed as JSON when it can be).")
@click.option("--allow-empty", is_flag=True, help="Commit even when nothing changed.")
@click.option("--allow-pickle", is_flag=True,
              help="Accept adapter_model.bin: load it with torch.load(weights_only=True), store it as safetensors.")
@click.option("--with-training-state", is_flag=True,
              help="Also keep a Trainer checkpoint's optimizer, scheduler, RNG and trainer state (opaque blobs).")
@json_option
@quiet_option
@pass_state
def commit(state: State, message: str, source: str | None, base: str | None, base_revision: str | None,
           meta: tuple[str, ...], allow_empty: bool, allow_pickle: bool, with_training_state: bool, as_json: bool,
           quiet: bool) -> None:
    """Record the adapter as a new version on the current branch."""
    repo = state.repo
    c = repo.commit(message, source=state.path(source) if source else None, base=base, base_revision=base_revision,
                    metadata=_parse_meta(meta), allow_empty=allow_empty, allow_pickle=allow_pickle,
                    with_training_state=with_training_state, progress=BarProgress(not quiet))
    if as_json:
        echo_json(c.to_json())
        return
    branch = repo.current_branch() or "detached HEAD"
    click.echo(f"[{branch} {style(short(c.id), fg='yellow')}] {c.summary}")


@click.command()
@json_option
@pass_state
def status(state: State, as_json: bool) -> None:
    """Show which tensors and files of the work tree differ from HEAD."""
    repo = state.repo
    if as_json:
        echo_json(repo.status_json())
        return
    st = repo.status()
    tracking = repo.tracking()
    branch = repo.current_branch()
    click.echo(f"On branch {branch}" if branch else f"HEAD detached at {short(repo.head())}")
    if tracking is not None:
        click.echo(tracking.describe())
    if st.head is None:
        click.echo("No commits yet")
    if st.note and (st.clean or st.head is None):
        click.echo(st.note)
        return
    if st.clean:
        click.echo("nothing to commit, the adapter matches HEAD")
        return
    for label, names, colour in (("modified", st.modified, "yellow"), ("added", st.added, "green"),
                                 ("removed", st.removed, "red")):
        if names:
            click.echo(f"\nTensors {label} ({len(names)}):")
            for n in names:
                click.echo(style(f"    {label}: {n}", fg=colour))
    files = [("modified", st.files_modified), ("added", st.files_added), ("removed", st.files_removed)]
    if any(names for _, names in files):
        click.echo("\nFiles:")
        for label, names in files:
            for n in names:
                click.echo(f"    {label}: {n}")
    if st.config_changed:
        click.echo("\nConfig keys changed: " + (", ".join(st.config_keys) or "(formatting only)"))
    click.echo("\nRun 'adaptvc commit -m MESSAGE' to record these changes.")


@click.command()
@click.argument("rev", type=TEXT)
@click.option("-o", "--output", type=PathFromC(file_okay=False),
              help="Write the version into this folder instead of the work tree (HEAD does not move).")
@click.option("-f", "--force", is_flag=True, help="Overwrite uncommitted changes or differing files.")
@click.option("--with-training-state", is_flag=True,
              help="Also restore the training state kept with the version (to resume training from DIR).")
@json_option
@quiet_option
@pass_state
def checkout(state: State, rev: str, output: str | None, force: bool, with_training_state: bool, as_json: bool,
             quiet: bool) -> None:
    """Write version REV in standard PEFT layout (loadable with PeftModel.from_pretrained)."""
    repo = state.repo
    out = state.path(output) if output else None
    c = repo.checkout(rev, out, force=force, with_training_state=with_training_state,
                      progress=BarProgress(not quiet))
    target = out if out is not None else repo.work_tree
    if as_json:
        echo_json({"commit": c.id, "path": str(target)})
        return
    files = repo.store.read_snapshot(c.snapshot).files
    size = sum(f.size for f in files if with_training_state or not is_training_state(f.path))  # what was written
    click.echo(f"Checked out {short(c.id)} ({c.summary}) into {target} [{human_bytes(size)}]")
    if out is None and repo.current_branch() is None:
        click.echo("HEAD is now detached; to keep new commits on a branch run 'adaptvc switch -c NAME'", err=True)


@click.command()
@click.argument("path", type=PathFromC(file_okay=False), default="adaptvc-demo")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 20))
@pass_state
def demo(state: State, path: str, epochs: int) -> None:
    """Build a tiny Llama + LoRA, train it for a few epochs, version each one, and load a version back.

    PATH must be new or empty, or the folder of an earlier demo (what that demo made there is replaced).
    Needs the torch extra (pip install 'adaptvc[torch]'); downloads nothing.
    """
    try:
        from ...demo import run_demo
    except ImportError as e:
        raise CliError(f"the demo needs torch, transformers and peft ({e.name} is missing): "
                       "pip install 'adaptvc[torch]'") from None
    run_demo(state.path(path), epochs=epochs, echo=click.echo, oneline=oneline)


@click.command()
@click.argument("rev", type=TEXT)
@click.option("-o", "--output", required=True, type=PathFromC(file_okay=False),
              help="Folder to resume from: trainer.train(resume_from_checkpoint=DIR).")
@click.option("-b", "--branch", type=TEXT, help="Name of the new branch (default: resume-REV).")
@json_option
@quiet_option
@pass_state
def resume(state: State, rev: str, output: str, branch: str | None, as_json: bool, quiet: bool) -> None:
    """Resume training from version REV: write it with its training state into DIR and start a branch at REV,
    so the resumed run's commits stack on REV (not on the newest version)."""
    name, c = state.repo.resume(rev, state.path(output), branch=branch, progress=BarProgress(not quiet))
    if as_json:
        echo_json({"branch": name, "commit": c.id, "path": str(state.path(output))})
        return
    click.echo(f"Wrote {short(c.id)} ({c.summary}) with its training state into {output}; now on new branch {name}")
    click.echo(f"resume with: trainer.train(resume_from_checkpoint={output!r})")


COMMANDS = [init, commit, status, checkout, demo, resume]
