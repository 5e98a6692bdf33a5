"""The ``adaptvc`` command: a thin click layer over :class:`adaptvc.Repository`.

Commands are registered by name and imported only when run (``adaptvc --version`` imports none of them).
One error boundary (:class:`AdaptvcGroup`) turns every failure into ``Error: …`` on stderr and exit code 1
(usage errors: 2) — expected ones with their own message, anything else as "internal error" with a hint —
so no user ever sees a traceback. A closed pipe (``adaptvc log | head``) ends the command quietly, as git does.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..errors import AdaptvcError, AdaptvcWarning
from .context import CliError, State
from .terminal import pager

#: command name -> module in adaptvc.cli.commands (each module lists its commands in COMMANDS)
COMMANDS: dict[str, str] = {
    "init": "worktree", "commit": "worktree", "status": "worktree", "checkout": "worktree", "demo": "worktree",
    "resume": "worktree",
    "log": "history", "show": "history", "reflog": "history",
    "diff": "diff",
    "merge": "merge", "merge-base": "merge", "revert": "merge", "reset": "merge", "restore": "merge",
    "tag": "refs", "branch": "refs", "switch": "refs",
    "remote": "remote", "push": "remote", "fetch": "remote", "pull": "remote", "clone": "remote", "ls-remote": "remote",
    "verify-base": "verify_base",
    "hooks": "hooks", "pin": "hooks",
    "fsck": "maintenance", "gc": "maintenance", "unlock": "maintenance", "upgrade": "maintenance",
    "export": "serving", "deploy": "serving", "deployed": "serving",
    "ui": "ui",
}


#: commands whose text output goes through the pager on a terminal (as git does)
PAGED = {"log", "show", "diff"}


def _show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, AdaptvcWarning):
        click.echo(f"warning: {message}", err=True)


class AdaptvcGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        mod = importlib.import_module(f"adaptvc.cli.commands.{module}")
        return next((c for c in mod.COMMANDS if c.name == name), None)

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _show_warning
        args = [*ctx._protected_args, *ctx.args]
        paged = bool(args) and args[0] in PAGED and "--json" not in args and not ctx.params.get("no_pager")
        try:
            with pager(paged):
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing half-written was recorded.", err=True)
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            _quiet_exit_on_closed_pipe()
        except AdaptvcError as e:
            raise CliError(str(e)) from None
        except OSError as e:
            if e.errno == errno.EPIPE:
                _quiet_exit_on_closed_pipe()
            if e.errno == errno.ENOSPC:
                raise CliError("no space left on the device; nothing half-written was recorded: free some space "
                               "and run the command again") from None
            if e.errno == errno.EFBIG:
                raise CliError("file size limit exceeded while writing; nothing half-written was recorded") \
                    from None
            where = f": {e.filename}" if e.filename else ""
            raise CliError(f"{e.strerror or e}{where}") from None
        except UnicodeError as e:
            raise CliError(f"text that is not valid UTF-8 ({e.reason})") from None
        except RecursionError:
            raise CliError("input nested too deeply to read") from None
        except MemoryError:
            raise CliError("out of memory") from None
        except Exception as e:
            if os.environ.get("ADAPTVC_DEBUG"):
                raise
            text = (str(e).strip().splitlines() or [""])[0]
            raise CliError(f"internal error ({type(e).__name__}: {text}); this is a bug in adaptvc, please report "
                           "it (ADAPTVC_DEBUG=1 shows where it happened)") from None


def _quiet_exit_on_closed_pipe() -> None:
    """The reader went away (``adaptvc log | head -2``): stop quietly with git's status for SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise click.exceptions.Exit(141)


@click.group(cls=AdaptvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adaptvc")
@click.option("-C", "directory", type=click.Path(file_okay=False), default=".",
              help="Run as if adaptvc was started in this folder.")
@click.option("-P", "--no-pager", is_flag=True, help="Do not send long output (log, show, diff) to a pager.")
@click.pass_context
def cli(ctx: click.Context, directory: str, no_pager: bool) -> None:
    """Version control for PEFT adapters (LoRA, DoRA, IA3, ...).

    \b
    Start:    adaptvc init; model.save_pretrained("."); adaptvc commit -m "epoch 1"
    Inspect:  adaptvc log | show REV | status
    Name:     adaptvc tag v1 | branch exp | switch exp
    Restore:  adaptvc checkout v1 -o serve/
    """
    ctx.obj = State(Path(directory), paging=not no_pager)
    if os.environ.get("NO_COLOR"):
        ctx.color = False


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="adaptvc")
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing half-written was recorded.", err=True)
        sys.exit(130)
