"""The ``adaptvc`` executable. ``adaptvc --version`` answers before anything else is imported (click
included); every other call goes to the command group of :mod:`adaptvc.cli.main`.

click's standalone mode turns Ctrl-C into ``Aborted!`` and exit code 1; the executable runs the group in
non-standalone mode instead, so an interrupted command says what an interruption leaves behind (nothing
half-written: every write is all-or-nothing) and exits 130, as a shell reports a command ended by SIGINT.
"""

from __future__ import annotations

import contextlib
import sys

INTERRUPTED = "Interrupted; nothing half-written was recorded."
#: the exit code of a command ended by SIGINT (128 + 2), as shells report it
SIGINT_EXIT = 130


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from .._version import __version__

        print(f"adaptvc, version {__version__}")
        return
    try:
        run(sys.argv[1:])
    except KeyboardInterrupt:  # before the command started (imports) or after it ended
        _interrupted()


def run(argv: list[str]) -> None:
    """Run the command line ``argv`` as the executable does: exit with its status (never return normally)."""
    import click

    from .main import cli

    try:
        rv = cli.main(args=argv, prog_name="adaptvc", standalone_mode=False)
    except click.Abort as e:  # click's translation of KeyboardInterrupt (and of EOF at a prompt)
        if isinstance(e.__cause__, KeyboardInterrupt):
            _interrupted()
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:  # usage errors (2) and every "Error: …" of the error boundary (1)
        e.show()
        sys.exit(e.exit_code)
    # a command returns None; click.exceptions.Exit (--help, a closed pipe) comes back as its exit code
    sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _interrupted() -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr is gone: the exit code still says it
        print(INTERRUPTED, file=sys.stderr, flush=True)
    sys.exit(SIGINT_EXIT)
