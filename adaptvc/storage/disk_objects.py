"""The object store on disk, immutable, written atomically, re-hashed on read. Objects live in packs
(``objects/pack/pack-*.pack`` + ``.idx``, store format 2: one pack per commit, see :mod:`.pack`) or loose
(``objects/ab/cdef…`` raw, ``objects/ab/cdef….z`` compressed: store format 1, and commit objects). A store
reads both; it writes packs when ``packed`` (format 2) and loose files otherwise.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError, SymlinkRefusedError
from ..hashing import BLOCK_SIZE, hash_bytes, is_object_id, new_hasher
from ..objects import Commit
from .atomic import TEMP_PREFIX, create_exclusive, open_dir, remove_tree, temp_name, write_all
from .base import MAX_METADATA_OBJECT, ObjectStore, commit_from_bytes
from .commit_cache import CommitCache
from .compression import MAGIC, MAX_RAW_SIZE, compress, decompress, iter_decompress, parse_container
from .locks import LockInfo, owner_record
from .pack import COMPRESSED, RAW, Entry, PackIndex, PackWriter

#: the store layouts this code reads: 1 (loose objects only), 2 (packs)
STORE_FORMATS = (1, 2)
STORE_FORMAT = 2
#: a pack index larger than this is not one of ours
MAX_INDEX_BYTES = 1 << 32

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RepackReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_compressed: int = 0
    packs_written: int = 0
    packs_removed: int = 0


def _fanout(oid: str) -> tuple[str, str]:
    if not is_object_id(oid):
        raise CorruptObjectError(oid, "not an object id")
    return oid[:2], oid[2:]


class DiskObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], packed: bool = False, cache_commits: bool = False) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.objects_dir = self.root / "objects"
        self.pack_dir = self.objects_dir / "pack"
        self.tmp_dir = self.root / "tmp"
        self.writers_dir = self.root / "writers"
        #: write new objects into packs (store format 2); commit objects stay loose either way
        self.packed = packed
        self._unsynced: list[tuple[str, str]] = []
        self._buffer: memoryview | None = None
        self._sessions: dict[int, weakref.finalize] = {}
        self._packs: dict[str, PackIndex] = {}
        self._where: dict[str, PackIndex] = {}
        self._packs_seen: tuple[int, int] | None = None
        self._writer: PackWriter | None = None
        self._fresh_packs: set[str] = set()
        self.last_pack: str | None = None  # the name of the pack the last flush wrote
        self._lock = threading.RLock()
        self._cache_commits = cache_commits
        self._commit_cache: CommitCache | None = None

    # -- commits, through the commit cache -------------------------------------------------------------------
    def read_commit(self, oid: str) -> Commit:
        if not self._cache_commits:
            return super().read_commit(oid)
        if self._commit_cache is None:
            self._commit_cache = CommitCache(self.root)
            weakref.finalize(self, self._commit_cache.save)  # what this process learnt, kept for the next
        data = self._commit_cache.get(oid)
        if data is None:
            data = self.read(oid, MAX_METADATA_OBJECT)
            commit = commit_from_bytes(data, oid)  # only a valid commit goes into the cache
            self._commit_cache.add(oid, data)
            return commit
        return commit_from_bytes(data, oid)

    def save_caches(self) -> None:
        """Write what this process learnt into the caches (best effort: they are only shortcuts)."""
        if self._commit_cache is not None:
            self._commit_cache.save()

    # -- packs ----------------------------------------------------------------------------------------------
    def _load_packs(self) -> None:
        """Read the index of every pack not read yet (and forget packs gc removed), when the folder changed."""
        try:
            fd = self._dir("objects", "pack")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return
        try:
            st = os.fstat(fd)
            seen = (st.st_mtime_ns, st.st_ino)
            if seen == self._packs_seen:
                return
            names = {n[:-4] for n in os.listdir(fd) if n.startswith("pack-") and n.endswith(".idx")}
            for gone in set(self._packs) - names:
                self._forget_pack(gone)
            for name in sorted(names - set(self._packs)):
                try:
                    f = os.open(f"{name}.idx", _READ, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        raise CorruptObjectError(name, "the pack index is a symbolic link") from None
                    raise
                with os.fdopen(f, "rb") as fh:
                    data = fh.read(MAX_INDEX_BYTES + 1)
                index = PackIndex(self.pack_dir / f"{name}.idx", data)
                self._packs[name] = index
                for oid in index.ids():
                    self._where.setdefault(oid, index)
            self._packs_seen = seen
        finally:
            os.close(fd)

    def _forget_pack(self, name: str) -> None:
        index = self._packs.pop(name, None)
        if index is None:
            return
        for oid in index.ids():
            if self._where.get(oid) is index:
                del self._where[oid]
                for other in self._packs.values():  # the same object may be in a newer pack
                    if other.find(oid) is not None:
                        self._where[oid] = other
                        break
        index.close()

    def _packed(self, oid: str) -> tuple[PackIndex, Entry] | None:
        index = self._where.get(oid)
        if index is None:
            self._load_packs()
            index = self._where.get(oid)
        if index is None:
            return None
        entry = index.find(oid)
        return (index, entry) if entry is not None else None

    def _opened(self, index: PackIndex) -> PackIndex:
        with self._lock:
            return self._open_pack(index)

    def _open_pack(self, index: PackIndex) -> PackIndex:
        if not index.is_open:
            fd_dir = self._dir("objects", "pack")
            try:
                fd = os.open(index.pack_path.name, _READ, dir_fd=fd_dir)
            except FileNotFoundError:
                raise ObjectNotFoundError(index.pack_path.name) from None
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise CorruptObjectError(index.pack_path.name, "the pack is a symbolic link") from None
                raise
            finally:
                os.close(fd_dir)
            index.open(fd)
        return index

    def location_of(self, oid: str) -> tuple[Path, int, int] | None:
        """Where an object's stored bytes are: (file, offset, length) — a loose file (offset 0) or a range of
        a pack; None when the store does not have it."""
        found = self._packed(oid)
        if found is not None:
            return found[0].pack_path, found[1].offset, found[1].length
        for suffix in ("", ".z"):
            st = self._lstat(oid, suffix)
            if st is not None:
                p = self.path(oid)
                return p.with_name(p.name + suffix), 0, st.st_size
        return None

    def packs(self) -> list[PackIndex]:
        self._load_packs()
        return list(self._packs.values())

    def _pending(self, oid: str) -> Entry | None:
        return self._writer.entries.get(oid) if self._writer is not None else None

    def _ensure_writer(self) -> PackWriter:
        if self._writer is None:
            self._begin_session()
            tmp_fd = self._dir("tmp", create=True)
            try:
                self._writer = PackWriter(tmp_fd, temp_name("pack"))
            except BaseException:
                os.close(tmp_fd)
                raise
        return self._writer

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
        if self._pending(oid) is not None or self._packed(oid) is not None:
            return True
        for suffix in ("", ".z"):
            st = self._lstat(oid, suffix)
            if st is not None and stat.S_ISREG(st.st_mode):
                return True
        return False

    def is_compressed(self, oid: str) -> bool:
        found = self._packed(oid)
        if found is not None:
            return found[1].encoding == COMPRESSED
        st = self._lstat(oid)
        return (st is None or not stat.S_ISREG(st.st_mode)) and self._lstat(oid, ".z") is not None

    def freshen(self, oid: str) -> bool:
        """If the object exists, touch its mtime and return True. A writer that reuses an existing object
        freshens it, so that gc's grace period protects it exactly like a newly written one."""
        d, name = _fanout(oid)
        self._begin_session()
        if self._pending(oid) is not None:
            return True
        found = self._packed(oid)
        if found is not None:
            index = found[0]
            if index.name not in self._fresh_packs:  # a pack is freshened as a whole, once per session
                try:
                    fd_dir = self._dir("objects", "pack")
                    try:
                        os.utime(index.pack_path.name, dir_fd=fd_dir, follow_symlinks=False)
                    finally:
                        os.close(fd_dir)
                except FileNotFoundError:  # removed by gc just now: not here any more
                    self._forget_pack(index.name)
                    return self.freshen(oid)
                except PermissionError:
                    return True
                self._fresh_packs.add(index.name)
            return True
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
        """Object ids in the store (packed and loose), optionally only those starting with ``prefix`` (hex)."""
        self._load_packs()
        loose = set(self._loose_ids(prefix))
        yield from sorted(loose | {oid for oid in self._where if oid.startswith(prefix)})

    def _loose_ids(self, prefix: str = "") -> Iterator[str]:
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
        self._fresh_packs.clear()
        with self._lock:
            if self._writer is not None and not self._sessions:  # written but never flushed: abandoned
                self._writer.abort()
                self._writer = None

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
        for attempt in (1, 2):
            fd = self._dir("objects", d, create=True)
            try:
                os.replace(tmp_name, name + suffix, src_dir_fd=tmp_fd, dst_dir_fd=fd)
                break
            except FileNotFoundError:
                # gc removed the (then empty) fan-out folder between our open and the rename: make it again
                if attempt == 2 or not os.path.lexists(self.tmp_dir / tmp_name):
                    raise
            finally:
                os.close(fd)
        self._unsynced.append((d, name + suffix))

    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        return self._put(oid, chunks, loose=not self.packed)

    def put_commit(self, commit) -> str:  # type: ignore[no-untyped-def]
        """Commits stay loose (a commit is 1 file; its objects, one pack and its index)."""
        self._put(commit.id, commit.encode(), loose=True)
        return commit.id

    def _put(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview, loose: bool) -> bool:
        if self.freshen(oid):
            return False
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        if not loose:
            with self._lock:
                self._ensure_writer().append(oid, chunks, sum(len(c) for c in chunks))
            return True
        with self._temp_file() as (f, tmp_fd, name):
            for c in chunks:
                f.write(c)
            f.flush()
            self._install(tmp_fd, name, oid)
        return True

    def put_stream(self, f: BinaryIO, size: int) -> str:
        if self.packed:
            with self._lock:
                writer = self._ensure_writer()
                oid, offset = writer.append_stream(f, size, BLOCK_SIZE)
                if oid in writer.entries or self._packed(oid) is not None or self._lstat(oid) is not None:
                    writer.drop_tail(offset)
                    self.freshen(oid)
                else:
                    writer.entries[oid] = Entry(oid, offset, size, size, RAW)
            return oid
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
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                if not writer.entries:
                    writer.abort()
                else:
                    fd = self._dir("objects", "pack", create=True)
                    try:
                        name, data = writer.finish(fd)
                    except BaseException:
                        writer.abort()
                        raise
                    finally:
                        os.close(fd)
                    index = PackIndex(self.pack_dir / f"{name}.idx", data)
                    replaced = self._packs.get(name)
                    if replaced is not None:  # the same objects at the same places: the same pack, rewritten
                        self._forget_pack(name)
                    self._packs[name] = index
                    self._fresh_packs.add(name)
                    self.last_pack = name
                    for oid in index.ids():
                        self._where.setdefault(oid, index)
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
        found = self._packed(oid)
        if found is not None and found[1].encoding == COMPRESSED:
            return decompress(self._opened(found[0]).view(found[1]), oid, expected_size)
        with self._container(oid) as view:
            return decompress(view, oid, expected_size)

    def size(self, oid: str) -> int:
        """The object's size (uncompressed)."""
        pending = self._pending(oid)
        if pending is not None:
            return pending.raw_size
        found = self._packed(oid)
        if found is not None:
            if found[1].raw_size > MAX_RAW_SIZE:
                raise CorruptObjectError(oid, f"its pack entry declares {found[1].raw_size} bytes")
            return found[1].raw_size
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

    def _shared_buffer(self) -> memoryview:
        if self._buffer is None:  # one buffer for the store's life: no fresh memory per object
            self._buffer = memoryview(bytearray(BLOCK_SIZE))
        return self._buffer

    def _packed_chunks(self, oid: str, index: PackIndex, entry: Entry,
                       buffer: memoryview | None = None) -> Iterator[memoryview]:
        try:
            self._opened(index)
        except ObjectNotFoundError:  # gc repacked it away meanwhile: look again
            self._forget_pack(index.name)
            found = self._packed(oid)
            if found is None:
                raise ObjectNotFoundError(oid) from None
            index, entry = found
            self._opened(index)
        if entry.encoding == RAW:
            if entry.length != entry.raw_size:
                raise CorruptObjectError(oid, "its pack entry's sizes disagree")
            buf = buffer if buffer is not None else self._shared_buffer()
            position = 0
            while position < entry.length:
                n = index.read_into(entry, position, buf)
                position += n
                yield buf[:n]
        elif entry.encoding == COMPRESSED:
            produced = 0
            for block in iter_decompress(index.view(entry), oid):
                produced += len(block)
                yield memoryview(block)
            if produced != entry.raw_size:
                raise CorruptObjectError(oid, "its compressed form holds another size than its pack entry says")
        else:
            raise CorruptObjectError(oid, f"unknown pack encoding {entry.encoding}")

    def iter_chunks(self, oid: str, verify: bool = True, buffer: memoryview | None = None) -> Iterator[memoryview]:
        h = new_hasher() if verify else None
        pending = self._pending(oid)
        found = None if pending is not None else self._packed(oid)
        if pending is not None or found is not None:
            chunks = iter([memoryview(self._writer.read(pending))]) if pending is not None and self._writer \
                else self._packed_chunks(oid, *found, buffer)  # type: ignore[misc]
            for chunk in chunks:
                if h is not None:
                    h.update(chunk)
                yield chunk
            if h is not None and h.hexdigest() != oid:
                raise ChecksumMismatchError(f"object {oid}", oid, h.hexdigest())
            return
        try:
            fd = self._open_object(oid)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            view = buffer if buffer is not None else self._shared_buffer()
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

    def repack(self, keep: set[str], cutoff: float, dry_run: bool = False,
               compress_dtypes: dict[str, str] | None = None, progress: Any = None) -> RepackReport:
        """Consolidate every pack and loose object last used before ``cutoff`` into one new pack, keeping only
        the objects in ``keep``; then remove the old packs and loose files — each re-checked after it is taken
        away, so one a writer reused meanwhile stays. With ``compress_dtypes`` ({blob id: dtype}), newer packs
        are rewritten too (all their objects kept) and those blobs are stored compressed."""
        from ..progress import SILENT

        progress = progress or SILENT
        report = RepackReport()
        self._load_packs()
        old, fresh = [], []
        for index in self._packs.values():
            st = self._pack_stat(index)
            if st is not None:
                (old if st.st_mtime < cutoff else fresh).append(index)
        rewrite_fresh = bool(compress_dtypes)
        untouched = {oid for index in fresh for oid in index.ids()} if not rewrite_fresh else set()
        loose = []
        for oid in self._loose_ids():
            files = self.object_files(oid)
            if files and max(st.st_mtime for _, st in files) < cutoff and all(stat.S_ISREG(st.st_mode)
                                                                           for _, st in files):
                loose.append(oid)
        for index in old:
            for entry in index:
                if entry.oid not in keep and entry.oid not in untouched and entry.oid not in report.removed:
                    report.removed.append(entry.oid)
                    report.bytes_freed += entry.length
        for oid in loose:
            if oid not in keep and oid not in report.removed:
                report.removed.append(oid)
                report.bytes_freed += sum(st.st_size for _, st in self.object_files(oid))
        if dry_run:
            return report
        if len(old) + (len(fresh) if rewrite_fresh else 0) <= 1 and not loose and not report.removed \
                and not compress_dtypes:
            return report  # one pack, nothing to drop or compress: already consolidated
        sources = [(index, True) for index in old] + [(index, False) for index in fresh if rewrite_fresh]
        wanted = [oid for oid in loose if oid in keep]
        written: set[str] = set(untouched)
        total = sum(e.raw_size for index, only_kept in sources for e in index if e.oid in keep or not only_kept)
        total += sum(self.size(o) for o in wanted)
        self._verify_all(sources, keep)
        progress.begin("repack", total)
        writer = self._ensure_writer()
        try:
            for index, only_kept in sources:
                self._opened(index)
                for entry in index:
                    if (only_kept and entry.oid not in keep) or entry.oid in written:
                        continue
                    report.bytes_compressed += self._append_packed(writer, entry.oid, index.view(entry),
                                                                   entry.encoding, entry.raw_size,
                                                                   compress_dtypes or {})
                    written.add(entry.oid)
                    progress.update(entry.raw_size)
            for oid in wanted:
                if oid in written:
                    continue
                data = self.read(oid)
                report.bytes_compressed += self._append_packed(writer, oid, memoryview(data), RAW, len(data),
                                                               compress_dtypes or {})
                written.add(oid)
                progress.update(len(data))
        finally:
            progress.end()
        self.flush()
        report.packs_written = 1
        for index, only_kept in sources:  # an old pack goes unless a writer reused it meanwhile; a newer one
            if index.name == self.last_pack:  # was copied whole, so it just goes. A pack rewritten with the
                continue  # same objects at the same places has the same name: it is the new pack, it stays
            if self._retire_pack(index, cutoff if only_kept else None):
                report.packs_removed += 1
        for oid in loose:
            self.prune(oid, cutoff)
        self.end_session()
        return report

    def _verify_all(self, sources: list[tuple[PackIndex, bool]], keep: set[str]) -> None:
        """Every object a repack copies is checked first: a corrupt one stops the repack before anything goes."""
        for index, only_kept in sources:
            for entry in index:
                if only_kept and entry.oid not in keep:
                    continue
                h = new_hasher()
                for chunk in self._packed_chunks(entry.oid, index, entry):
                    h.update(chunk)
                if h.hexdigest() != entry.oid:
                    raise ChecksumMismatchError(f"object {entry.oid}", entry.oid, h.hexdigest())

    def _append_packed(self, writer: PackWriter, oid: str, view: memoryview, encoding: int, raw_size: int,
                       dtypes: dict[str, str]) -> int:
        """Append one object to ``writer``, compressing it when its dtype is known; the bytes saved."""
        if encoding == RAW and oid in dtypes:
            container = compress(bytes(view), dtypes[oid])
            if container is not None and hash_bytes(decompress(container, oid, raw_size)) == oid:
                writer.append(oid, [container], raw_size, COMPRESSED)
                return raw_size - len(container)
        writer.append(oid, [view], raw_size, encoding)
        return 0

    def _pack_stat(self, index: PackIndex) -> os.stat_result | None:
        try:
            fd = self._dir("objects", "pack")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return None
        try:
            return os.stat(index.pack_path.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def _retire_pack(self, index: PackIndex, cutoff: float | None) -> bool:
        """Take a pack (and its index) away, unless it was used after ``cutoff`` (None: every object of it
        is elsewhere now, so it goes whatever happened to it); True when it is gone."""
        fd = self._dir("objects", "pack")
        tmp_fd = self._dir("tmp", create=True)
        try:
            trash_idx, trash_pack = temp_name("gc-idx"), temp_name("gc-pack")
            try:
                os.rename(index.idx_path.name, trash_idx, src_dir_fd=fd, dst_dir_fd=tmp_fd)
            except FileNotFoundError:
                return False
            try:
                os.rename(index.pack_path.name, trash_pack, src_dir_fd=fd, dst_dir_fd=tmp_fd)
            except FileNotFoundError:
                os.unlink(trash_idx, dir_fd=tmp_fd)
                return True
            if cutoff is not None and os.stat(trash_pack, dir_fd=tmp_fd, follow_symlinks=False).st_mtime >= cutoff:
                # a writer freshened it between our look and the rename: it stays
                os.rename(trash_pack, index.pack_path.name, src_dir_fd=tmp_fd, dst_dir_fd=fd)
                os.rename(trash_idx, index.idx_path.name, src_dir_fd=tmp_fd, dst_dir_fd=fd)
                return False
            os.unlink(trash_pack, dir_fd=tmp_fd)
            os.unlink(trash_idx, dir_fd=tmp_fd)
            os.fsync(fd)
            self._forget_pack(index.name)
            return True
        finally:
            os.close(fd)
            os.close(tmp_fd)

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
                if len(name) == 2:  # fan-out folders only: objects/pack stays (a writer may be about to use it)
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

