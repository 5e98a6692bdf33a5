"""What every command shares: where it runs, the repository there (opened on first use), and the error that
ends a command with ``Error: …`` and exit code 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..repository import Repository


class CliError(click.ClickException):
    exit_code = 1


class State:
    def __init__(self, cwd: Path, paging: bool = True) -> None:
        self.cwd = cwd
        self.paging = paging
        self._repo: Repository | None = None

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            from ..repository import Repository

            self._repo = Repository(self.cwd)
        return self._repo

    def path(self, p: str | os.PathLike[str]) -> Path:
        return self.cwd / p


pass_state = click.make_pass_decorator(State)
