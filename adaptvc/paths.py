"""Names that become paths on disk come from files and remotes, so they are treated as hostile."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnsafePathError


def check_relative_path(path: str) -> str:
    """Accept only a plain relative POSIX path that stays inside the folder it is joined to."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(str(path), "empty")
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise UnsafePathError(path, "control character")
    if "\\" in path:
        raise UnsafePathError(path, "backslash")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(path, "absolute path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(path, "empty, '.' or '..' component")
    if parts[0] == ".adaptvc":
        raise UnsafePathError(path, "inside the repository's own folder")
    return path


def join_inside(root: str | os.PathLike[str], rel: str) -> Path:
    """``root / rel`` after checking ``rel``; the result is guaranteed to be below ``root``."""
    check_relative_path(rel)
    return Path(root, *rel.split("/"))
