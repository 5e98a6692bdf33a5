"""Turning API results into text and JSON. No logic beyond presentation lives here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..objects import Commit
from .terminal import color_enabled


def echo_json(data: Any) -> None:
    """JSON for scripts: indented on a terminal (a person reads it), compact in a pipe (the encoder written
    in C, ten times faster on a long history)."""
    import sys

    if sys.stdout.isatty():
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def short(oid: str | None, n: int = 12) -> str:
    return oid[:n] if oid else "-"


def when(timestamp: str) -> str:
    try:
        return datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return timestamp


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def style(text: str, **kwargs: Any) -> str:
    """Colour only where it can be shown, never with NO_COLOR (captured output stays plain)."""
    return click.style(text, **kwargs) if color_enabled() else text


def decoration(labels: list[str]) -> str:
    return f" ({', '.join(labels)})" if labels else ""


def oneline(commit: Commit, labels: list[str]) -> str:
    """One commit as ``log --oneline`` prints it."""
    return f"{style(short(commit.id), fg='yellow')}{decoration(labels)} {commit.summary}"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def commit_text(commit: Commit, labels: list[str]) -> str:
    lines = [style(f"commit {commit.id}", fg="yellow") + decoration(labels)]
    if len(commit.parents) > 1:
        lines.append("Merge:  " + " ".join(short(p) for p in commit.parents))
    lines.append(f"Author: {commit.author}")
    lines.append(f"Date:   {when(commit.timestamp)}")
    lines.append(f"Base:   {commit.base.describe()}" + (" (fingerprinted)" if commit.base.fingerprint else ""))
    prov = commit.provenance or {}
    if prov.get("git_commit"):
        where = f" on {prov['branch']}" if prov.get("branch") else ""
        lines.append(f"Code:   git {str(prov['git_commit'])[:12]}{' (dirty)' if prov.get('dirty') else ''}{where}")
    meta = dict(commit.metadata)
    metrics = meta.pop("metrics", None)
    if meta:
        lines.append("Meta:   " + ", ".join(f"{k}={_value(v)}" for k, v in sorted(meta.items())))
    if isinstance(metrics, dict) and metrics:
        lines.append("Metrics: " + ", ".join(f"{k}={_value(v)}" for k, v in sorted(metrics.items())))
    lines.append("")
    lines.extend(f"    {line}" for line in (commit.message or "(no message)").splitlines() or [""])
    return "\n".join(lines)


def table(rows: list[list[str]], header: list[str], right: set[int] | None = None) -> str:
    """A plain aligned table; ``right`` holds the indices of right-aligned columns."""
    right = right or set()
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def fmt(row: list[str]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), *(fmt(r) for r in rows)])
