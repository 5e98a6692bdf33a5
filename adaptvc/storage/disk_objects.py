"""The object store on disk: ``objects/ab/cdef…`` (raw) or ``objects/ab/cdef….z`` (compressed), immutable,
written atomically, re-hashed on read.

Writes are batched for durability: ``put_*`` renames each object into place at once (a crash never leaves a
partial object under its final name) and :meth:`DiskObjectStore.flush` fsyncs everything written since the
last flush. Callers flush before they write anything that points at the new objects, so on disk objects
always exist before the commit that names them, and the commit before the ref.

Nothing below the store's root is followed if it is a link: folders are opened with ``O_NOFOLLOW`` one
component at a time and files created with ``O_EXCL | O_NOFOLLOW`` (a shared folder remote may be written
by other people). A writer registers a session in ``writers/`` before its first write; gc reads those to
never remove what a commit in progress is about to point at.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import struct
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError, SymlinkRefusedError
from ..hashing import BLOCK_SIZE, hash_bytes, is_object_id, new_hasher
from .atomic import TEMP_PREFIX, create_exclusive, open_dir, remove_tree, temp_name, write_all
from .base import ObjectStore
from .compression import MAGIC, MAX_RAW_SIZE, compress, decompress, iter_decompress, parse_container
from .locks import LockInfo, owner_record

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _fanout(oid: str) -> tuple[str, str]:
    if not is_object_id(oid):
        raise CorruptObjectError(oid, "not an object id")
    return oid[:2], oid[2:]


class DiskObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.writers_dir = self.root / "writers"
        self._unsynced: list[tuple[str, str]] = []
        self._buffer: memoryview | None = None
        self._sessions: dict[int, weakref.finalize] = {}

    # -- layout ---------------------------------------------------------------------------------------------
    def path(self, oid: str) -> Path:
        d, name = _fanout(oid)
        return self.objects_dir / d / name

    def zpath(self, oid: str) -> Path:
        """Where the compressed form of an object lives (``adaptvc gc --aggressive`` writes it)."""
        p = self.path(oid)
        return p.with_name(p.name + ".z")

    def _dir(self, *parts: str, create: bool = False) -> int:
        return open_dir(self.root, parts, create=create)

    def _lstat(self, oid: str, suffix: str = "") -> os.stat_result | None:
        d, name = _fanout(oid)
        try:
            fd = self._dir("objects", d)
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return None
        try:
            return os.stat(name + suffix, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def has(self, oid: str) -> bool:
        for suffix in ("", ".z"):
            st = self._lstat(oid, suffix)
            if st is not None and stat.S_ISREG(st.st_mode):
                return True
        return False

    def is_compressed(self, oid: str) -> bool:
        st = self._lstat(oid)
        return (st is None or not stat.S_ISREG(st.st_mode)) and self._lstat(oid, ".z") is not None

    def freshen(self, oid: str) -> bool:
        """If the object exists, touch its mtime and return True. A writer that reuses an existing object
        freshens it, so that gc's grace period protects it exactly like a newly written one."""
        d, name = _fanout(oid)
        self._begin_session()
        try:
            fd = self._dir("objects", d)
        except FileNotFoundError:
            return False
        try:
            for suffix in ("", ".z"):
                try:
                    os.utime(name + suffix, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except PermissionError:  # a read-only store (someone else's): reading still works
                    return self.has(oid)
                return True
            return False
        finally:
            os.close(fd)

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Object ids in the store, optionally only those starting with ``prefix`` (hex)."""
        try:
            root = self._dir("objects")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return
        try:
            names = [prefix[:2]] if len(prefix) >= 2 else sorted(os.listdir(root))
            for d in names:
                if len(d) != 2 or (prefix and not d.startswith(prefix[:2])):
                    continue
                try:
                    sub = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                except OSError:
                    continue
                try:
                    entries = os.listdir(sub)
                finally:
                    os.close(sub)
                for name in sorted({n.removesuffix(".z") for n in entries}):
                    oid = d + name
                    if is_object_id(oid) and oid.startswith(prefix):
                        yield oid
        finally:
            os.close(root)

    # -- write sessions (gc reads them) ---------------------------------------------------------------------
    # One session per writing thread: gc run by a thread never waits for that thread's own (finished) writes,
    # but always for every other thread's and process's.
    def _begin_session(self) -> None:
        tid = threading.get_ident()
        if tid in self._sessions:
            return
        name = temp_name(f"writer-{tid}")
        try:
            fd_dir = self._dir("writers", create=True)
            try:
                fd = create_exclusive(fd_dir, name)
                try:
                    write_all(fd, owner_record())
                finally:
                    os.close(fd)
            finally:
                os.close(fd_dir)
        except OSError:
            return  # a read-only store is never written, so gc of it is not ours to protect
        self._sessions[tid] = weakref.finalize(self, _end_session, self.root, name)

    def end_session(self) -> None:
        finalizer = self._sessions.pop(threading.get_ident(), None)
        if finalizer is not None:
            finalizer()

    def writers_since(self) -> float | None:
        try:
            fd = self._dir("writers")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return None
        mine = f"{TEMP_PREFIX}{os.getpid()}-"
        me = f"-writer-{threading.get_ident()}"
        oldest: float | None = None
        try:
            for name in os.listdir(fd):
                if name.startswith(mine) and name.endswith(me):
                    continue  # this thread's own session: it is running gc, not writing
                info = LockInfo.read(Path(name), fd)
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if info is not None and info.stale:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=fd)
                    continue
                oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
        finally:
            os.close(fd)
        return oldest

    def clock(self) -> float:
        fd = self._dir("tmp", create=True)
        name = temp_name("clock")
        try:
            f = create_exclusive(fd, name)
            try:
                return os.fstat(f).st_mtime
            finally:
                os.close(f)
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    # -- writing --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, int, str]]:
        """A new temporary file in the store's tmp/ (same file system); removed unless installed."""
        self._begin_session()
        tmp_fd = self._dir("tmp", create=True)
        name = temp_name("obj")
        try:
            fd = create_exclusive(tmp_fd, name, 0o444)
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f, tmp_fd, name
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=tmp_fd)
                raise
        finally:
            os.close(tmp_fd)

    def _install(self, tmp_fd: int, tmp_name: str, oid: str, suffix: str = "") -> None:
        d, name = _fanout(oid)
        fd = self._dir("objects", d, create=True)
        try:
            os.replace(tmp_name, name + suffix, src_dir_fd=tmp_fd, dst_dir_fd=fd)
        finally:
            os.close(fd)
        self._unsynced.append((d, name + suffix))

    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        if self.freshen(oid):
            return False
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        with self._temp_file() as (f, tmp_fd, name):
            for c in chunks:
                f.write(c)
            f.flush()
            self._install(tmp_fd, name, oid)
        return True

    def put_stream(self, f: BinaryIO, size: int) -> str:
        h = new_hasher()
        with self._temp_file() as (out, tmp_fd, name):
            remaining = size
            while remaining:
                chunk = f.read(min(BLOCK_SIZE, remaining))
                if not chunk:
                    raise EOFError("file ended early")
                h.update(chunk)
                out.write(chunk)
                remaining -= len(chunk)
            out.flush()
            oid = h.hexdigest()
            if self.freshen(oid):
                os.unlink(name, dir_fd=tmp_fd)
            else:
                self._install(tmp_fd, name, oid)
        return oid

    def flush(self) -> None:
        """Make every object written since the last flush durable."""
        dirs: set[str] = set()
        for d, name in self._unsynced:
            fd = self._dir("objects", d)
            try:
                f = os.open(name, _READ, dir_fd=fd)
                try:
                    os.fsync(f)
                finally:
                    os.close(f)
                if d not in dirs:
                    os.fsync(fd)
                    dirs.add(d)
            finally:
                os.close(fd)
        if dirs:
            fd = self._dir("objects")
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()

    # -- reading --------------------------------------------------------------------------------------------
    def _open_object(self, oid: str, suffix: str = "") -> int:
        d, name = _fanout(oid)
        try:
            fd = self._dir("objects", d)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(errno.ENOENT, "no such object", oid) from None
        except SymlinkRefusedError:
            raise CorruptObjectError(oid, f"objects/{d} is a symbolic link") from None
        try:
            return os.open(name + suffix, _READ, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CorruptObjectError(oid, "the object file is a symbolic link") from None
            raise
        finally:
            os.close(fd)

    def open(self, oid: str) -> BinaryIO:
        """The raw object's file, opened for reading (not verified)."""
        try:
            return os.fdopen(self._open_object(oid), "rb")
        except FileNotFoundError:
            return self.reader(oid)

    @contextlib.contextmanager
    def _container(self, oid: str) -> Iterator[memoryview]:
        """The compressed form of ``oid``, mapped read-only."""
        try:
            fd = self._open_object(oid, ".z")
        except FileNotFoundError:
            raise ObjectNotFoundError(oid) from None
        try:
            size = os.fstat(fd).st_size
            if size < 14:
                raise CorruptObjectError(oid, "compressed object is damaged (truncated)")
            # not closed explicitly: the decoder may still hold views of it; it goes with the last of them
            mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        yield memoryview(mapping)

    def decompressed(self, oid: str, expected_size: int) -> bytes:
        with self._container(oid) as view:
            return decompress(view, oid, expected_size)

    def size(self, oid: str) -> int:
        """The object's size (uncompressed)."""
        st = self._lstat(oid)
        if st is not None and stat.S_ISREG(st.st_mode):
            return st.st_size
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise CorruptObjectError(oid, "the object file is a symbolic link")
        try:
            fd = self._open_object(oid, ".z")
        except FileNotFoundError:
            raise ObjectNotFoundError(oid) from None
        with os.fdopen(fd, "rb") as f:
            head = f.read(13)
        if len(head) < 13 or head[:4] != MAGIC:
            raise CorruptObjectError(oid, "compressed object is damaged (bad header)")
        n = struct.unpack_from("<Q", head, 5)[0]
        if n > MAX_RAW_SIZE:
            raise CorruptObjectError(oid, f"compressed object is damaged (declares {n} bytes)")
        return n

    def iter_chunks(self, oid: str, verify: bool = True) -> Iterator[memoryview]:
        h = new_hasher() if verify else None
        try:
            fd = self._open_object(oid)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            if self._buffer is None:  # one buffer for the store's life: no fresh memory per object
                self._buffer = memoryview(bytearray(BLOCK_SIZE))
            view = self._buffer
            with os.fdopen(fd, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(view)
                    if not n:
                        break
                    if h is not None:
                        h.update(view[:n])
                    yield view[:n]
        else:
            with self._container(oid) as container:
                for block in iter_decompress(container, oid):
                    if h is not None:
                        h.update(block)
                    yield memoryview(block)
        if h is not None:
            got = h.hexdigest()
            if got != oid:
                raise ChecksumMismatchError(f"object {oid}", oid, got)

    # -- maintenance ----------------------------------------------------------------------------------------
    def compress_object(self, oid: str, dtype: str | None = None) -> int:
        """Replace a raw object by its compressed form when that pays; returns the bytes saved. The
        compressed copy is verified before the raw file goes, so a crash leaves one good copy or both."""
        st = self._lstat(oid)
        if st is None or not stat.S_ISREG(st.st_mode):
            return 0
        data = self.read(oid)
        container = compress(data, dtype)
        if container is None:
            return 0
        parse_container(container, oid)
        if hash_bytes(decompress(container, oid, len(data))) != oid:
            return 0
        with self._temp_file() as (f, tmp_fd, name):
            f.write(container)
            f.flush()
            os.fsync(f.fileno())
            self._install(tmp_fd, name, oid, ".z")
        d, name = _fanout(oid)
        fd = self._dir("objects", d)
        try:
            os.fsync(fd)
            os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        self._unsynced = [u for u in self._unsynced if u != (d, name + ".z")]
        return len(data) - len(container)

    def object_files(self, oid: str) -> list[tuple[str, os.stat_result]]:
        """(file name, lstat) of each file holding ``oid`` (raw, compressed, or both during a repack)."""
        out = []
        for suffix in ("", ".z"):
            st = self._lstat(oid, suffix)
            if st is not None:
                out.append((oid[2:] + suffix, st))
        return out

    def prune(self, oid: str, cutoff: float, dry_run: bool = False) -> int | None:
        files = self.object_files(oid)
        if not files or max(st.st_mtime for _, st in files) >= cutoff:
            return None
        if dry_run:
            return sum(st.st_size for _, st in files)
        d, _ = _fanout(oid)
        fd = self._dir("objects", d)
        tmp_fd = self._dir("tmp", create=True)
        freed = 0
        try:
            for name, _ in files:
                trash = temp_name("gc")
                try:
                    os.rename(name, trash, src_dir_fd=fd, dst_dir_fd=tmp_fd)
                except FileNotFoundError:
                    continue
                # a writer may have freshened the object between our stat and the rename: it wins
                now = os.stat(trash, dir_fd=tmp_fd, follow_symlinks=False)
                if now.st_mtime >= cutoff:
                    with contextlib.suppress(FileExistsError):
                        os.link(trash, name, src_dir_fd=tmp_fd, dst_dir_fd=fd, follow_symlinks=False)
                    os.unlink(trash, dir_fd=tmp_fd)
                    return None
                os.unlink(trash, dir_fd=tmp_fd)
                freed += now.st_size
        finally:
            os.close(fd)
            os.close(tmp_fd)
        return freed

    def prune_temporary(self, cutoff: float, dry_run: bool = False) -> int:
        try:
            fd = self._dir("tmp")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return 0
        removed = 0
        try:
            for name in os.listdir(fd):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_mtime >= cutoff:
                    continue
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        remove_tree(fd, name)
                removed += 1
        finally:
            os.close(fd)
        return removed

    def temporary_count(self) -> int:
        try:
            fd = self._dir("tmp")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return 0
        try:
            return len(os.listdir(fd))
        finally:
            os.close(fd)

    def remove_empty_fanout(self) -> None:
        try:
            fd = self._dir("objects")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return
        try:
            for name in os.listdir(fd):
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=fd)
        finally:
            os.close(fd)


def _end_session(root: Path, name: str) -> None:
    with contextlib.suppress(OSError):
        fd = open_dir(root, ["writers"])
        try:
            os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

