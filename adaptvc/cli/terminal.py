"""The terminal, with git's habits: colour only where it can be shown (never with ``NO_COLOR``), and long output
(log, show, diff) through a pager on a terminal — ``ADAPTVC_PAGER``, else ``PAGER``, else ``less`` with
``LESS=FRX`` (quits at once when the text fits, keeps colour), switched off by ``--no-pager``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator

import click

_paging = False
_tty: tuple[object, bool] = (None, False)  # (the stdout last asked, whether it is a terminal)


def color_enabled() -> bool:
    global _tty
    if os.environ.get("NO_COLOR"):
        return False
    if _paging:
        return True
    out = sys.stdout
    if _tty[0] is not out:  # one isatty() per stream, not one per coloured word (log prints thousands)
        _tty = (out, out.isatty())
    return _tty[1]


def pager_command() -> str | None:
    cmd = os.environ.get("ADAPTVC_PAGER")
    if cmd is None:
        cmd = os.environ.get("PAGER", "less")
    cmd = cmd.strip()
    return None if cmd in ("", "cat") else cmd


@contextlib.contextmanager
def pager(enabled: bool = True) -> Iterator[None]:
    """Send what the block echoes to the pager (only on a terminal, and only when ``enabled``)."""
    global _paging
    cmd = pager_command() if enabled and sys.stdout.isatty() else None
    if cmd is None:
        yield
        return
    import subprocess

    env = {**os.environ, "LESS": os.environ.get("LESS", "FRX"), "LV": os.environ.get("LV", "-c")}
    try:
        proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, env=env)
    except OSError:
        yield  # no pager to be had: print directly
        return
    assert proc.stdin is not None
    stream = io.TextIOWrapper(proc.stdin, encoding="utf-8", errors="replace")
    saved, _paging = sys.stdout, True
    ctx = click.get_current_context(silent=True)
    saved_color = ctx.color if ctx is not None else None
    sys.stdout = stream
    if ctx is not None:
        ctx.color = color_enabled()
    try:
        yield
    except BrokenPipeError:
        pass  # the reader quit the pager early
    finally:
        sys.stdout, _paging = saved, False
        if ctx is not None:
            ctx.color = saved_color
        with contextlib.suppress(BrokenPipeError, OSError):
            stream.close()
        proc.wait()
