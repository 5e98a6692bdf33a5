"""The one way adaptvc writes a file: below a trusted root, never through a symbolic link, all or nothing.

* Folders below the root are opened one component at a time with ``O_NOFOLLOW`` (and created when asked),
  so a link planted anywhere below the root (``refs/heads`` -> ``/home/you``) is refused, never followed.
* A file is written to a temporary name created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` in the same folder,
  fsynced, then renamed over its final name: a reader sees the old file or the new one, never a mix, and a
  planted link at the temporary name makes the write fail instead of redirecting it.
* Temporary names start with :data:`TEMP_PREFIX` and carry the writer's pid, so debris left by a killed
  process can be recognised and removed by the next writer of the folder.

The root itself is named by the user (a work tree, ``-o DIR``, a remote path) and is opened normally.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import SymlinkRefusedError

TEMP_PREFIX = ".adaptvc-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def split(rel: str | Sequence[str]) -> list[str]:
    return [p for p in rel.split("/") if p] if isinstance(rel, str) else list(rel)


def open_dir(root: str | os.PathLike[str], rel: str | Sequence[str] = (), create: bool = False,
             mode: int = 0o755) -> int:
    """A file descriptor of the folder ``root/rel``, reached without following any link below ``root``.

    Raises :class:`SymlinkRefusedError` naming the first component that is a link (or not a folder), and
    FileNotFoundError when a component is missing and ``create`` is false."""
    parts = split(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                nfd = _make_component(part, fd, root, parts[: i + 1], mode)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    _refuse(part, fd, root, parts[: i + 1], create)
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse(part: str, fd: int, root: str | os.PathLike[str], shown: list[str], writing: bool) -> None:
    """Raise the error for a component that is not a plain folder: a link, or a file."""
    path = str(Path(root, *shown))
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is None or stat.S_ISLNK(st.st_mode):
        raise SymlinkRefusedError(path, writing=writing) from None
    raise NotADirectoryError(errno.ENOTDIR, "Not a folder", path) from None


def _make_component(part: str, fd: int, root: str | os.PathLike[str], shown: list[str], mode: int) -> int:
    """Create the folder ``part`` and open it; again if someone (gc, tidying empty folders) removed it in
    between."""
    for attempt in range(5):
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, mode, dir_fd=fd)
        try:
            return _open_component(part, fd, root, shown)
        except FileNotFoundError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _open_component(part: str, fd: int, root: str | os.PathLike[str], shown: list[str]) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse(part, fd, root, shown, True)
        raise


@contextlib.contextmanager
def opened_dir(root: str | os.PathLike[str], rel: str | Sequence[str] = (), create: bool = False) -> Iterator[int]:
    fd = open_dir(root, rel, create)
    try:
        yield fd
    finally:
        os.close(fd)


def fsync_fd(fd: int) -> None:
    os.fsync(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: str = "") -> str:
    """A fresh temporary name: unguessable, so nobody can plant a link there in advance."""
    return f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}-{final}"[:240]


def temp_owner(name: str) -> int | None:
    """The pid in a temporary name adaptvc made, or None for any other name."""
    if not name.startswith(TEMP_PREFIX):
        return None
    pid, _, _ = name[len(TEMP_PREFIX):].partition("-")
    return int(pid) if pid.isdigit() else None


def create_exclusive(dir_fd: int, name: str, mode: int = 0o644) -> int:
    """Create a new file ``name`` in ``dir_fd``: never an existing one, never through a link."""
    return os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) or data.format != "B" else data
    total = 0
    while total < len(view):
        total += os.write(fd, view[total:])
    return total


@contextlib.contextmanager
def atomic_writer(root: str | os.PathLike[str], rel: str, mode: int = 0o644, durable: bool = True,
                  create_dirs: bool = True) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``root/rel`` in one step, on error it vanishes.

    ``root/rel`` never holds a partial file: a reader sees the old content or the new, whatever happens."""
    parts = split(rel)
    dfd = open_dir(root, parts[:-1], create=create_dirs)
    tmp = temp_name(parts[-1])
    try:
        fd = create_exclusive(dfd, tmp, mode)
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                yield f
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            os.fsync(dfd)
    finally:
        os.close(dfd)


def write_atomic(root: str | os.PathLike[str], rel: str, data: bytes, mode: int = 0o644,
                 durable: bool = True) -> None:
    with atomic_writer(root, rel, mode=mode, durable=durable) as f:
        f.write(data)


def append_line(root: str | os.PathLike[str], rel: str, line: bytes) -> None:
    """Append one line to ``root/rel`` (created if missing), never through a link, in one write."""
    parts = split(rel)
    with opened_dir(root, parts[:-1], create=True) as dfd:
        fd = os.open(parts[-1], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dfd)
        try:
            write_all(fd, line)
        finally:
            os.close(fd)


def read_file(root: str | os.PathLike[str], rel: str, max_bytes: int) -> bytes | None:
    """The bytes of ``root/rel`` read without following links (None when absent); at most ``max_bytes``, else
    ValueError. A link anywhere below ``root`` raises :class:`SymlinkRefusedError`."""
    parts = split(rel)
    try:
        with opened_dir(root, parts[:-1]) as dfd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise SymlinkRefusedError(str(Path(root, *parts))) from None
                raise
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{Path(root, *parts)} is larger than {max_bytes} bytes")
    return data


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a file, a link, or a whole folder) from ``dir_fd`` without following any link."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return
    except IsADirectoryError:
        pass
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.EPERM):
            raise
    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for entry in os.listdir(sub):
            remove_tree(sub, entry)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dir_fd)
