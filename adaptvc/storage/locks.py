"""Lock files: who holds one (pid, host, time), whether that holder is gone, and taking one safely.

A lock is a file created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so two processes never both hold it, and a
planted link is never written through). It is held for milliseconds (a ref) or for one checkout (a folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import create_exclusive, temp_name, write_all

#: a lock older than this whose owner cannot be checked (another host) is taken to be stale
MAX_AGE = 600.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: written into the lock file when it is taken."""

    path: Path
    pid: int | None
    host: str | None
    time: float | None

    @classmethod
    def read(cls, path: Path, dir_fd: int | None = None) -> LockInfo | None:
        try:
            fd = os.open(path if dir_fd is None else path.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError:
            return cls(path, None, None, None)
        try:
            raw = os.read(fd, 4096)
            mtime = os.fstat(fd).st_mtime
        finally:
            os.close(fd)
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid, host, when = data.get("pid"), data.get("host"), data.get("time")
        return cls(path, pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                   host if isinstance(host, str) else None,
                   float(when) if isinstance(when, (int, float)) and not isinstance(when, bool) else mtime)

    @property
    def stale(self) -> bool:
        if self.pid is not None and self.host == _hostname():
            return not pid_alive(self.pid)
        if self.time is None:
            return False
        return time.time() - self.time > MAX_AGE


def _hostname() -> str:
    import socket

    return socket.gethostname()


def owner_record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": _hostname(), "time": time.time()}).encode()


def try_lock(dir_fd: int, name: str) -> bool:
    """Create lock file ``name`` in ``dir_fd`` if nobody holds it; True when taken. The lock appears with its
    owner already written in it (a private file, then a hard link), so a holder killed at any moment leaves a
    lock that says whose it was."""
    tmp = temp_name(name)
    fd = create_exclusive(dir_fd, tmp)
    try:
        try:
            write_all(fd, owner_record())
        finally:
            os.close(fd)
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def acquire(dir_fd: int, name: str, timeout: float) -> bool:
    """Take lock ``name``, waiting up to ``timeout`` seconds for a live holder; False when still held."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not try_lock(dir_fd, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def release(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def take_over_stale(dir_fd: int, name: str) -> bool:
    """Remove lock ``name`` if its holder is gone; True when removed. The lock is first renamed to a private
    name and re-read, so two processes clearing the same stale lock never remove a fresh one."""
    info = LockInfo.read(Path(name), dir_fd)
    if info is None or not info.stale:
        return False
    private = f"{name}.stale-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(name, private, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    again = LockInfo.read(Path(private), dir_fd)
    if again is not None and not again.stale:  # somebody took it in between: put it back
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(private, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        release(dir_fd, private)
        return False
    release(dir_fd, private)
    return True


@contextlib.contextmanager
def held(dir_fd: int, name: str, timeout: float, on_busy, take_over: bool = True) -> Iterator[None]:
    """Hold lock ``name`` in ``dir_fd`` for the block; ``on_busy(LockInfo | None)`` raises when it is held by
    someone else. With ``take_over``, a lock whose holder is gone (same host, dead pid) is cleared first."""
    if not acquire(dir_fd, name, timeout) and \
            not (take_over and take_over_stale(dir_fd, name) and acquire(dir_fd, name, timeout)):
        on_busy(LockInfo.read(Path(name), dir_fd))
        raise RuntimeError("on_busy must raise")
    try:
        yield
    finally:
        release(dir_fd, name)
