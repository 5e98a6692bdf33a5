"""The ``adaptvc`` command: a thin click layer over :class:`adaptvc.Repository`.

One error boundary (:class:`AdaptvcGroup`) turns every expected failure into ``Error: …`` on stderr and
exit code 1 (usage errors: 2), so no user ever sees a traceback for bad input.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import AdaptvcError
from ..repository import Repository


class CliError(click.ClickException):
    exit_code = 1


class AdaptvcGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdaptvcError as e:
            raise CliError(str(e)) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise CliError("no space left on the device; the store is unchanged, free some space and "
                               "try again") from None
            if e.errno == errno.EFBIG:
                raise CliError("file size limit exceeded while writing; the store is unchanged") from None
            where = f": {e.filename}" if e.filename else ""
            raise CliError(f"{e.strerror or e}{where}") from None
        except UnicodeDecodeError as e:
            raise CliError(f"cannot decode input: {e}") from None


class State:
    """What every command shares: where it runs, and the repository there (opened on first use)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self._repo: Repository | None = None

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = Repository(self.cwd)
        return self._repo

    def path(self, p: str | os.PathLike[str]) -> Path:
        return self.cwd / p


pass_state = click.make_pass_decorator(State)


@click.group(cls=AdaptvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adaptvc")
@click.option("-C", "directory", type=click.Path(file_okay=False), default=".",
              help="Run as if adaptvc was started in this folder.")
@click.pass_context
def cli(ctx: click.Context, directory: str) -> None:
    """Version control for PEFT adapters (LoRA, DoRA, IA3, ...).

    \b
    Start:    adaptvc init; model.save_pretrained("."); adaptvc commit -m "epoch 1"
    Inspect:  adaptvc log | show REV | status
    Name:     adaptvc tag v1 | branch exp | switch exp
    Restore:  adaptvc checkout v1 -o serve/
    """
    ctx.obj = State(Path(directory))


def _register() -> None:
    from . import base, diff, history, hooks, maintenance, refs, remote, worktree

    for module in (worktree, history, diff, refs, remote, base, hooks, maintenance):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="adaptvc")
    except KeyboardInterrupt:
        click.echo("Interrupted; the store is unchanged unless a command said otherwise.", err=True)
        sys.exit(130)
