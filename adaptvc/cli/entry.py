"""The ``adaptvc`` executable. ``adaptvc --version`` answers before anything else is imported (click
included); every other call goes to :func:`adaptvc.cli.main.main`."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from .._version import __version__

        print(f"adaptvc, version {__version__}")
        return
    from .main import main as run

    run()
