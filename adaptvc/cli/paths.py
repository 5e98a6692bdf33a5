"""Paths on the command line are relative to ``-C DIR`` when it is given, as git resolves them: ``adaptvc -C repo
verify-base HEAD ../base`` looks for ``repo/../base``, never in the shell's folder.

Every path argument goes through one of these: :class:`PathFromC` (click's checks of a folder or a file, made
where the command will look), :func:`name_or_path` (a Hub name or a folder: BASE) and :func:`remote_arg` (a
configured remote's name or a URL or folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .context import State


class PathFromC(click.Path):
    """``click.Path`` whose checks (exists, is a file, is a folder) look at the path from ``-C``'s folder.
    Plain ``click.Path`` looks from the shell's folder: ``-C repo deployed serve`` was refused because
    ``./serve`` did not exist, and a file named like an output folder in the shell's folder refused that
    folder. The value is returned as given; the command resolves it with :meth:`State.path`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..remotes.registry import scheme_of

        if scheme_of(os.fsdecode(value)) is not None:  # 's3://b/p' would otherwise become the local folder 's3:/b/p'
            self.fail(f"{os.fsdecode(value)!r} is a URL, and a local path is needed here (a version goes to a bucket "
                      "with 'adaptvc export REV URL')", param, ctx)
        state = ctx.find_object(State) if ctx is not None else None
        if state is None or os.path.isabs(os.fsdecode(value)):
            return super().convert(value, param, ctx)
        super().convert(os.fspath(state.path(os.fsdecode(value))), param, ctx)
        return value


def name_or_path(state: State, text: str, revision: str | None = None) -> str:
    """A base model given as a folder or a Hub name, as the path of a folder: from ``-C``'s folder when it is
    there (or is clearly a path: absolute, or starting with ``.``, ``..`` or ``~``), else a Hub name's folder
    in the local cache (at ``revision``); else the path from ``-C``'s folder, which the caller reports as
    missing. Never a folder of that name in the shell's folder."""
    from ..hfcache import hf_cache_folder

    p = Path(text).expanduser()
    here = state.path(p)
    explicit = p.is_absolute() or text in (".", "..") or text.startswith(("./", "../", "~"))
    if explicit or os.path.lexists(here):
        return str(here)
    cached = hf_cache_folder(text, revision)
    return str(cached) if cached is not None else str(here)


def remote_arg(state: State, remote: str | None) -> str | None:
    """A remote argument: a configured remote's name as it is; a folder (relative to ``-C``'s folder) made
    absolute; a URL as it is."""
    from ..remotes.registry import looks_like_url, normalise

    if remote is None or not looks_like_url(remote) or remote in state.repo.remotes():
        return remote
    return normalise(remote, state.cwd)
