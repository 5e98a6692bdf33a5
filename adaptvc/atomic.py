"""Atomic file writes: a temporary file in the same file system, fsync, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path, tmp_dir: Path | None = None) -> Path:
    folder = tmp_dir if tmp_dir is not None else target.parent
    return folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def atomic_writer(target: Path, mode: int = 0o644, tmp_dir: Path | None = None,
                  durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``target`` in one step, on error it vanishes.

    ``target`` never holds a partial file: a reader sees the old content or the new, whatever happens.
    """
    tmp = temp_name(target, tmp_dir)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(target.parent)


def write_atomic(target: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    with atomic_writer(target, mode=mode, durable=durable) as f:
        f.write(data)
