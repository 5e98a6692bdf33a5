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

Packs are hostile input like everything else. One that cannot be used (an index that fails its checks, a pack
file missing, cut short, a link, a pipe or a folder) is recorded in :attr:`DiskObjectStore.bad_packs` and
skipped: only its objects are unavailable, and a missing object's error names it. The same object may be in
several packs (a gc killed half-way, a planted copy): every copy is kept in view, a copy that fails its check
is marked and the next one used. At most :data:`MAX_OPEN_PACKS` packs are open at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import (
    ChecksumMismatchError,
    CorruptObjectError,
    CorruptPackError,
    ObjectNotFoundError,
    SymlinkRefusedError,
    without_fsck_advice,
)
from ..hashing import BLOCK_SIZE, hash_bytes, is_object_id, new_hasher
from ..objects import Commit
from .atomic import TEMP_PREFIX, create_exclusive, open_dir, remove_tree, temp_name, write_all
from .base import MAX_METADATA_OBJECT, ObjectStore, commit_from_bytes
from .commit_cache import CommitCache
from .compression import (
    HEADER2,
    MAGICS,
    MAX_RAW_SIZE,
    DeltaChainError,
    base_in_header,
    compress,
    decode_object,
    decompress,
    iter_chain,
    parse_container,
)
from .locks import LockInfo, owner_record
from .pack import BAD, COMPRESSED, GOOD, RAW, UNKNOWN, Entry, PackIndex, PackWriter, open_nofollow, read_index

#: the store layouts this code reads: 1 (loose objects only), 2 (packs)
STORE_FORMATS = (1, 2)
STORE_FORMAT = 2
#: the most packs one store keeps open at once (one file descriptor each); the least recently used is closed
#: to make room, and reopened — its size checked again — when it is needed
MAX_OPEN_PACKS = 64
#: the name under which :attr:`DiskObjectStore.bad_packs` records an ``objects/pack`` that is not a folder
PACK_FOLDER = "objects/pack"

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOOKUPS = 4  # a lookup is redone this many times at most when the packs change under it


@dataclass
class RepackReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_compressed: int = 0
    packs_written: int = 0
    packs_removed: int = 0


@dataclass(frozen=True)
class PackProblem:
    """A pack that cannot be used (``oid`` None), or one corrupt copy of an object in a pack."""

    pack: str
    oid: str | None
    problem: str
    #: for a corrupt copy: another copy of the object is intact (gc keeps that one and drops this)
    intact_elsewhere: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"pack": self.pack, "oid": self.oid, "problem": self.problem,
                "intact_elsewhere": self.intact_elsewhere}


class MissingPackedObjectError(ObjectNotFoundError):
    """An object the store does not have while some packs cannot be read: it may be in one of them."""

    def __init__(self, oid: str, bad_packs: dict[str, str]) -> None:
        super().__init__(oid)
        self.bad_packs = dict(bad_packs)
        shown = "; ".join(f"{name}: {why}" for name, why in list(bad_packs.items())[:3])
        more = f"; and {len(bad_packs) - 3} more" if len(bad_packs) > 3 else ""
        self.args = (f"object {oid} is missing from the store, and {len(bad_packs)} pack(s) cannot be read "
                     f"({shown}{more}); run 'adaptvc fsck'",)


class _PackGone(Exception):
    """The pack and its index were removed (by gc) since its index was read: the pack is simply not there."""


def _fanout(oid: str) -> tuple[str, str]:
    if not is_object_id(oid):
        raise CorruptObjectError(oid, "not an object id")
    return oid[:2], oid[2:]


def _corrupt_copy(oid: str, index: PackIndex, got: str) -> ChecksumMismatchError:
    """The error for a copy of ``oid`` in the pack of ``index`` that hashes to ``got``: it names the pack."""
    error = ChecksumMismatchError(f"object {oid}", oid, got)
    error.args = (f"object {oid} is corrupt: expected hash {oid}, got {got} (its copy in {index.name}); run "
                  "'adaptvc fsck'",)
    return error


def _is_pack_name(stem: str) -> bool:
    return stem.startswith("pack-") and len(stem) == 37 and is_object_id(stem[5:])


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
        #: packs this process cannot use, and why (an index failing its checks, a pack file missing, cut short,
        #: a link, not a regular file); ``objects/pack`` itself when it is a link
        self.bad_packs: dict[str, str] = {}
        #: copies of objects found corrupt, and why: {(pack name, object id): problem}
        self.bad_copies: dict[tuple[str, str], str] = {}
        self._open_packs: OrderedDict[str, PackIndex] = OrderedDict()
        self._lookups: dict[str, list[tuple[PackIndex, int]]] = {}  # recent answers of _copies (cleared on change)
        self._packs_seen: tuple[int, int] | None = None
        self._writer: PackWriter | None = None
        self._fresh_packs: set[str] = set()
        self._written_packs: list[str] = []  # every pack this store wrote, in order
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

    # -- packs: finding them ---------------------------------------------------------------------------------
    def _load_packs(self) -> None:
        """Read the index of every pack not read yet (and forget packs gc removed), when the folder changed. An
        index that cannot be used is recorded in :attr:`bad_packs` (tried again when the folder changes) and
        never stops the others from being read."""
        with self._lock:
            try:
                fd = self._dir("objects", "pack")
            except FileNotFoundError:
                self.bad_packs.pop(PACK_FOLDER, None)
                return
            except SymlinkRefusedError:
                self.bad_packs[PACK_FOLDER] = "it is a symbolic link (adaptvc never follows one)"
                return
            except NotADirectoryError:
                self.bad_packs[PACK_FOLDER] = "it is not a folder"
                return
            self.bad_packs.pop(PACK_FOLDER, None)
            try:
                st = os.fstat(fd)
                seen = (st.st_mtime_ns, st.st_ino)
                if seen == self._packs_seen:
                    return
                names = {n[:-4] for n in os.listdir(fd) if n.startswith("pack-") and n.endswith(".idx")}
                self._lookups.clear()
                for gone in set(self._packs) - names:
                    self._forget_pack(gone)
                for gone in set(self.bad_packs) - names - {PACK_FOLDER}:
                    del self.bad_packs[gone]
                for name in sorted(names - set(self._packs)):
                    try:
                        index = read_index(fd, name, self.pack_dir / f"{name}.idx")
                    except FileNotFoundError:
                        continue
                    except CorruptPackError as e:
                        self.bad_packs[name] = without_fsck_advice(str(e))
                        continue
                    except OSError as e:
                        self.bad_packs[name] = f"its index cannot be read ({e.strerror or e})"
                        continue
                    self.bad_packs.pop(name, None)
                    self._packs[name] = index
                self._packs_seen = seen
            finally:
                os.close(fd)

    def _forget_pack(self, name: str) -> None:
        with self._lock:
            self._lookups.clear()
            index = self._packs.pop(name, None)
            self._open_packs.pop(name, None)
            for key in [k for k in self.bad_copies if k[0] == name]:
                del self.bad_copies[key]
            if index is not None and index.users == 0:
                index.close()  # (one in use is closed by its last user)

    def _copies(self, oid: str, load: bool = True) -> list[tuple[PackIndex, int, Entry]]:
        """Every copy of ``oid`` in a pack this process may still use — (index, position, entry), oldest pack
        first — leaving out unusable packs and copies found corrupt. The packs are looked at again on a miss."""
        out = self._lookups.get(oid)
        if out is not None:
            return out
        if not is_object_id(oid):
            raise CorruptObjectError(oid, "not an object id")
        bad = self.bad_packs
        out = [(index, i, index.entry_at(i)) for index in list(self._packs.values())
               if (i := index.position(oid)) >= 0 and index.state(i) != BAD and index.name not in bad]
        if out:
            if len(self._lookups) >= 4096:
                self._lookups.clear()
            self._lookups[oid] = out
        elif load:
            before = self._packs_seen
            self._load_packs()
            if self._packs_seen != before:
                return self._copies(oid, load=False)
        return out

    def _packed(self, oid: str) -> tuple[PackIndex, Entry] | None:
        """The first copy of ``oid`` in a pack, without opening the pack (None: no pack holds it)."""
        copies = self._copies(oid)
        return (copies[0][0], copies[0][2]) if copies else None

    def _usable(self, oid: str, verify_duplicates: bool = False,
                buffer: memoryview | None = None) -> tuple[PackIndex, int, Entry] | None:
        """A copy of ``oid`` in a pack that opens (a regular file of the size its index says). With several
        copies and ``verify_duplicates``, the first that hashes to ``oid``: a corrupt one is marked and the next
        one tried. None when no pack holds it; the error of the last copy tried when none is usable."""
        copies = self._copies(oid)
        if copies and (len(copies) == 1 or not verify_duplicates) and copies[0][0].is_open:
            return copies[0]  # its pack is open already (checked when it was opened)
        failure: BaseException | None = None
        for _ in range(_LOOKUPS):
            if not copies:
                break
            for index, i, entry in copies:
                if index.is_open and not (verify_duplicates and len(copies) > 1 and index.state(i) != GOOD):
                    return index, i, entry
                try:
                    with self._using(index):
                        if verify_duplicates and len(copies) > 1:
                            self._verify_copy(index, i, entry, buffer)
                    return index, i, entry
                except _PackGone:
                    continue
                except (CorruptObjectError, ChecksumMismatchError) as e:  # marked (the copy or its pack)
                    failure = e
            # every copy failed, each now marked or forgotten: look again (gc may have written new packs)
            copies = self._copies(oid)
        if failure is not None:
            raise failure
        return None

    def _missing(self, oid: str) -> ObjectNotFoundError:
        """The error for an object found nowhere: it names the packs that could not be read, if any."""
        self._load_packs()
        return MissingPackedObjectError(oid, self.bad_packs) if self.bad_packs else ObjectNotFoundError(oid)

    # -- packs: opening them ---------------------------------------------------------------------------------
    def _pin(self, index: PackIndex) -> None:
        """Open ``index``'s pack if it is not, and keep it open (never closed to make room) until :meth:`_unpin`.
        CorruptPackError (the pack is then recorded as unusable) or _PackGone when it cannot be opened."""
        with self._lock:
            if not index.is_open:
                self._opened(index)
            index.users += 1

    def _unpin(self, index: PackIndex) -> None:
        with self._lock:
            index.users -= 1
            if index.users == 0 and index.name not in self._open_packs:
                index.close()  # forgotten, or made room for, while in use

    @contextlib.contextmanager
    def _using(self, index: PackIndex) -> Iterator[PackIndex]:
        """``index`` pinned (:meth:`_pin`) for the block."""
        self._pin(index)
        try:
            yield index
        finally:
            self._unpin(index)

    def _opened(self, index: PackIndex) -> PackIndex:
        with self._lock:
            if index.is_open:
                if index.name in self._open_packs:
                    self._open_packs.move_to_end(index.name)
                return index
            try:
                self._open_pack(index)
            except CorruptPackError as e:
                self._pack_unusable(index, e)
                raise
            if index.is_open:
                self._open_packs[index.name] = index
                self._make_room(keep=index)
            return index

    def _open_pack(self, index: PackIndex) -> PackIndex:
        """Open the pack of ``index`` (not following a link, not waiting on a pipe) and check it is a regular
        file of the size its index says."""
        if not index.is_open:
            what = f"pack {index.pack_path.name}"
            try:
                fd_dir = self._dir("objects", "pack")
            except (SymlinkRefusedError, NotADirectoryError) as e:
                raise CorruptPackError(what, f"{PACK_FOLDER} cannot be used ({e})") from None
            except FileNotFoundError:
                raise _PackGone(index.name) from None
            try:
                try:
                    fd = open_nofollow(fd_dir, index.pack_path.name, what)
                except FileNotFoundError:
                    try:
                        os.stat(index.idx_path.name, dir_fd=fd_dir, follow_symlinks=False)
                    except FileNotFoundError:  # its index is gone too: gc removed the pack
                        self._forget_pack(index.name)
                        raise _PackGone(index.name) from None
                    raise CorruptPackError(what, "it is missing (its index is there)") from None
            finally:
                os.close(fd_dir)
            index.open(fd)
        return index

    def _pack_unusable(self, index: PackIndex, error: BaseException) -> None:
        with self._lock:
            self.bad_packs[index.name] = without_fsck_advice(str(error))
            self._forget_pack(index.name)

    def _make_room(self, keep: PackIndex) -> None:
        """Close the least recently used packs nobody is reading from, down to :data:`MAX_OPEN_PACKS`."""
        while len(self._open_packs) > MAX_OPEN_PACKS:
            victim = next((ix for ix in self._open_packs.values() if ix.users == 0 and ix is not keep), None)
            if victim is None:
                return  # every open pack is being read from right now
            del self._open_packs[victim.name]
            victim.close()

    def _mark_bad(self, index: PackIndex, i: int, oid: str, error: BaseException) -> None:
        with self._lock:
            self._lookups.clear()
            index.mark(i, BAD)
            self.bad_copies[(index.name, oid)] = without_fsck_advice(str(error))

    def _verify_copy(self, index: PackIndex, i: int, entry: Entry, buffer: memoryview | None = None) -> None:
        """Hash one copy (once per process): marked GOOD, or marked BAD and its error raised."""
        state = index.state(i)
        if state == GOOD:
            return
        if state == BAD:
            raise CorruptObjectError(entry.oid, f"its copy in {index.name} is corrupt")
        if buffer is None:  # its own, sized to the object: a check may run on any thread
            buffer = memoryview(bytearray(max(1, min(entry.length, BLOCK_SIZE))))
        h = new_hasher()
        try:
            for chunk in self._packed_chunks(entry.oid, index, entry, buffer):
                h.update(chunk)
        except (CorruptPackError, DeltaChainError):
            raise  # the pack (recorded in bad_packs), or the delta's chain: not this copy
        except (CorruptObjectError, ChecksumMismatchError) as e:
            self._mark_bad(index, i, entry.oid, e)
            raise
        got = h.hexdigest()
        if got != entry.oid:
            error = _corrupt_copy(entry.oid, index, got)
            self._mark_bad(index, i, entry.oid, error)
            raise error
        index.mark(i, GOOD)

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
        if self._writer is not None and self._writer.full:  # a pack holds MAX_ENTRIES at most: start another
            self.flush()
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

    def _in_usable_pack(self, oid: str) -> bool:
        """A pack holds ``oid`` and that pack opens (its file is there, regular, of the right size): what a
        push or a fetch may rely on, where an index alone would not do."""
        try:
            return self._usable(oid) is not None
        except (CorruptObjectError, ChecksumMismatchError):
            return False

    def has(self, oid: str) -> bool:
        if self._pending(oid) is not None or self._in_usable_pack(oid):
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
        freshens it, so that gc's grace period protects it exactly like a newly written one. A copy in a pack
        that cannot be used, or known to be corrupt, does not count: the writer then writes the object again.
        A delta is only as alive as its bases: they are freshened too, and if one is gone the answer is False
        (the writer stores the object whole)."""
        if not self._freshen_one(oid):
            return False
        if self.is_compressed(oid):
            try:
                bases = self._bases_of({oid})
            except (CorruptObjectError, ChecksumMismatchError, OSError):
                return False
            return all(self._freshen_one(base) for base in bases)
        return True

    def _freshen_one(self, oid: str) -> bool:
        d, name = _fanout(oid)
        self._begin_session()
        if self._pending(oid) is not None:
            return True
        try:
            found = self._usable(oid)
        except (CorruptObjectError, ChecksumMismatchError):
            found = None
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
                    return self._freshen_one(oid)
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
        """Object ids in the store (packed and loose), optionally only those starting with ``prefix`` (hex).
        The objects of a pack that cannot be used are not listed (they are not available)."""
        self._load_packs()
        ids = set(self._loose_ids(prefix))
        for index in list(self._packs.values()):
            if index.name not in self.bad_packs:
                ids.update(index.ids(prefix))
        yield from sorted(ids)

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
                if oid in writer.entries or self._in_usable_pack(oid) or self._lstat(oid) is not None:
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
                    self._install_pack(writer)
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

    def _install_pack(self, writer: PackWriter) -> None:
        """Finish ``writer``'s pack into objects/pack and start using it; on any failure (objects/pack a link,
        a full disk) the temporary pack is removed, never left behind."""
        try:
            fd = self._dir("objects", "pack", create=True)
            try:
                name, data = writer.finish(fd)
            finally:
                os.close(fd)
        except BaseException:
            writer.abort()
            raise
        index = PackIndex(self.pack_dir / f"{name}.idx", data)
        if name in self._packs:  # the same objects at the same places: the same pack, rewritten
            self._forget_pack(name)
        self.bad_packs.pop(name, None)
        self._packs[name] = index
        self._lookups.clear()
        self._fresh_packs.add(name)
        self._written_packs.append(name)
        self.last_pack = name

    # -- reading --------------------------------------------------------------------------------------------
    def _open_object(self, oid: str, suffix: str = "") -> int:
        """A loose object's file, opened for reading: never through a link, never waiting on a pipe, and only
        when it is a regular file."""
        d, name = _fanout(oid)
        try:
            fd = self._dir("objects", d)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(errno.ENOENT, "no such object", oid) from None
        except SymlinkRefusedError:
            raise CorruptObjectError(oid, f"objects/{d} is a symbolic link") from None
        try:
            f = os.open(name + suffix, _READ, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CorruptObjectError(oid, "the object file is a symbolic link") from None
            if e.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
                raise CorruptObjectError(oid, "the object file is not a regular file") from None
            raise
        finally:
            os.close(fd)
        try:
            if not stat.S_ISREG(os.fstat(f).st_mode):
                raise CorruptObjectError(oid, "the object file is not a regular file")
        except BaseException:
            os.close(f)
            raise
        return f

    def open(self, oid: str) -> BinaryIO:
        """The raw object's file, opened for reading (not verified)."""
        try:
            return os.fdopen(self._open_object(oid), "rb")
        except FileNotFoundError:
            return self.reader(oid)

    def _container(self, oid: str) -> bytes:
        """The compressed form of loose ``oid``, read whole (not mapped: a file cut short under the reader is an
        error, not a crash)."""
        try:
            fd = self._open_object(oid, ".z")
        except FileNotFoundError:
            raise self._missing(oid) from None
        try:
            size = os.fstat(fd).st_size
            if size < 14:
                raise CorruptObjectError(oid, "compressed object is damaged (truncated)")
            parts, done = [], 0
            while done < size:
                part = os.pread(fd, size - done, done)
                if not part:
                    raise CorruptObjectError(oid, "compressed object is damaged (it ended early)")
                parts.append(part)
                done += len(part)
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def decompressed(self, oid: str, expected_size: int) -> bytes:
        found = self._usable(oid, verify_duplicates=True)
        if found is None:
            return decode_object(oid, self._container(oid), self._stored_container, self._raw_chunks, expected_size)
        index, i, entry = found
        if entry.raw_size != expected_size:
            raise CorruptObjectError(oid, f"its entry in {index.name} says {entry.raw_size} bytes, not "
                                          f"{expected_size}")
        if entry.encoding not in (RAW, COMPRESSED):
            raise CorruptObjectError(oid, f"unknown encoding {entry.encoding} in {index.name}")
        with self._using(index):
            stored = index.view(entry)
        if entry.encoding == RAW:  # the copy in use is stored raw (another copy may be compressed)
            if entry.length != entry.raw_size:
                raise CorruptObjectError(oid, f"its entry in {index.name} gives two different sizes")
            return stored
        try:
            return decode_object(oid, stored, self._stored_container, self._raw_chunks, expected_size)
        except DeltaChainError:
            raise  # its chain, not this copy (a base may come back, or be found in another pack)
        except (CorruptObjectError, ChecksumMismatchError) as e:
            self._mark_bad(index, i, oid, e)
            raise

    # -- delta bases: how a compressed object's chain is resolved (compression.iter_chain) ------------------
    def _stored_container(self, oid: str) -> bytes | None:
        """The compressed form of ``oid`` as a delta's base: None when a copy of it is stored raw (read with
        :meth:`_raw_chunks`: the cheapest, and no chain behind it); else the stored bytes of its first compressed
        copy — in the pack being written, a pack, or a loose ``.z`` file. ObjectNotFoundError when the store does
        not have it. No copy is verified here: the chain decoder hashes every base as it streams (verifying
        here would decode chains from inside a chain, unbounded)."""
        pending = self._pending(oid)
        writer = self._writer
        if pending is not None and writer is not None and pending.encoding == RAW:
            return None
        copies = self._copies(oid)
        if any(entry.encoding == RAW for _, _, entry in copies):
            return None
        st = self._lstat(oid)
        if st is not None and stat.S_ISREG(st.st_mode):
            return None
        if pending is not None and writer is not None:
            return writer.read(pending)
        for index, _, entry in copies:
            if entry.encoding != COMPRESSED:
                raise CorruptObjectError(oid, f"unknown encoding {entry.encoding} in {index.name}")
            try:
                with self._using(index):
                    return index.view(entry)
            except (_PackGone, CorruptPackError):
                continue
        return self._container(oid)

    def _raw_chunks(self, oid: str) -> Iterator[memoryview]:
        """The bytes of a copy of ``oid`` stored raw (what :meth:`_stored_container` answered None for), not
        verified (the chain decoder hashes a base as it streams), never decoded (a base found compressed here
        would start a chain of its own), through a buffer of its own (another may be in use up the chain)."""
        pending = self._pending(oid)
        writer = self._writer
        if pending is not None and writer is not None and pending.encoding == RAW:
            yield memoryview(writer.read(pending))
            return
        buf = memoryview(bytearray(1 << 20))
        for index, _, entry in self._copies(oid):
            if entry.encoding != RAW:
                continue
            try:
                self._pin(index)
            except (_PackGone, CorruptPackError):
                continue
            try:
                if entry.length != entry.raw_size:
                    raise CorruptObjectError(oid, f"its entry in {index.name} gives two different sizes")
                position = 0
                while position < entry.length:
                    n = index.read_into(entry, position, buf)
                    position += n
                    yield buf[:n]
            finally:
                self._unpin(index)
            return
        try:
            fd = self._open_object(oid)
        except FileNotFoundError:
            raise self._missing(oid) from None
        with os.fdopen(fd, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                yield buf[:n]

    def _stored_bases(self, oid: str, loose: bool = True) -> set[str]:
        """The bases named by the compressed copies of ``oid`` (pending, in packs, and loose unless ``loose`` is
        False), from their headers alone: what gc keeps so that every copy stays decodable."""
        heads: list[bytes] = []
        pending, writer = self._pending(oid), self._writer
        if pending is not None and writer is not None and pending.encoding == COMPRESSED:
            heads.append(writer.read(pending._replace(length=min(pending.length, HEADER2.size))))
        for index, _, entry in self._copies(oid, load=False):
            if entry.encoding != COMPRESSED:
                continue
            head = memoryview(bytearray(min(entry.length, HEADER2.size)))
            try:
                with self._using(index):
                    heads.append(bytes(head[:index.read_into(entry, 0, head)]))
            except (_PackGone, CorruptPackError, CorruptObjectError):
                continue
        try:
            fd = self._open_object(oid, ".z") if loose else None
        except (FileNotFoundError, CorruptObjectError):
            fd = None
        if fd is not None:
            try:
                heads.append(os.pread(fd, HEADER2.size, 0))
            finally:
                os.close(fd)
        return {base for head in heads if (base := base_in_header(head)) is not None}

    def _bases_of(self, oids: set[str], loose: set[str] | None = None) -> set[str]:
        """Every object a compressed copy of one of ``oids`` is a delta against, through whole chains (a loop
        ends where it started), leaving out ``oids`` themselves. ``loose``: the ids stored loose, when known (the
        others' loose files are not looked for)."""
        seen = set(oids)
        out: set[str] = set()
        todo = list(oids)
        while todo:
            oid = todo.pop()
            for base in self._stored_bases(oid, loose is None or oid in loose):
                if base not in seen:
                    seen.add(base)
                    out.add(base)
                    todo.append(base)
        return out

    def size(self, oid: str) -> int:
        """The object's size (uncompressed)."""
        pending = self._pending(oid)
        if pending is not None:
            return pending.raw_size
        found = self._packed(oid)
        if found is not None:
            if found[1].raw_size > MAX_RAW_SIZE:
                raise CorruptObjectError(oid, f"its entry in {found[0].name} declares {found[1].raw_size} bytes")
            return found[1].raw_size
        st = self._lstat(oid)
        if st is not None and stat.S_ISREG(st.st_mode):
            return st.st_size
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise CorruptObjectError(oid, "the object file is a symbolic link")
        try:
            fd = self._open_object(oid, ".z")
        except FileNotFoundError:
            raise self._missing(oid) from None
        with os.fdopen(fd, "rb") as f:
            head = f.read(13)
        if len(head) < 13 or head[:4] not in MAGICS:
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
        """The raw bytes of one pack copy (not verified here), read with ``pread``: raw ones through ``buffer``
        in blocks, compressed ones decoded from their stored bytes. The pack stays open while they stream."""
        self._pin(index)
        try:
            if entry.encoding == RAW:
                if entry.length != entry.raw_size:
                    raise CorruptObjectError(oid, f"its entry in {index.name} gives two different sizes")
                buf = buffer if buffer is not None else self._shared_buffer()
                position = 0
                while position < entry.length:
                    n = index.read_into(entry, position, buf)
                    position += n
                    yield buf[:n]
            elif entry.encoding == COMPRESSED:
                produced = 0
                for block in iter_chain(oid, index.view(entry), self._stored_container, self._raw_chunks):
                    produced += len(block)
                    yield memoryview(block)
                if produced != entry.raw_size:
                    raise CorruptObjectError(oid, f"its compressed form in {index.name} holds another size than "
                                                  "its pack entry says")
            else:
                raise CorruptObjectError(oid, f"unknown encoding {entry.encoding} in {index.name}")
        finally:
            self._unpin(index)

    def iter_chunks(self, oid: str, verify: bool = True, buffer: memoryview | None = None) -> Iterator[memoryview]:
        h = new_hasher() if verify else None
        pending = self._pending(oid)
        if pending is not None and self._writer is not None:
            stored = memoryview(self._writer.read(pending))  # (a repack writes compressed objects too)
            chunks = [stored] if pending.encoding == RAW else \
                iter_chain(oid, stored, self._stored_container, self._raw_chunks)
            for chunk in chunks:
                if h is not None:
                    h.update(chunk)
                yield memoryview(chunk)
            if h is not None and h.hexdigest() != oid:
                raise ChecksumMismatchError(f"object {oid}", oid, h.hexdigest())
            return
        found = self._usable(oid, verify_duplicates=True, buffer=buffer)
        if found is not None:
            index, i, entry = found
            started = False
            try:
                for chunk in self._packed_chunks(oid, index, entry, buffer):
                    started = True
                    if h is not None:
                        h.update(chunk)
                    yield chunk
            except _PackGone:  # closed to make room, then removed by gc: its objects are elsewhere now
                if started:
                    raise ObjectNotFoundError(oid) from None
                yield from self.iter_chunks(oid, verify, buffer)
                return
            except (CorruptPackError, DeltaChainError):
                raise
            except (CorruptObjectError, ChecksumMismatchError) as e:
                self._mark_bad(index, i, oid, e)
                raise
            if h is not None:
                got = h.hexdigest()
                if got != oid:
                    error = _corrupt_copy(oid, index, got)
                    self._mark_bad(index, i, oid, error)
                    raise error
                index.mark(i, GOOD)
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
            for block in iter_chain(oid, self._container(oid), self._stored_container, self._raw_chunks):
                if h is not None:
                    h.update(block)
                yield memoryview(block)
        if h is not None:
            got = h.hexdigest()
            if got != oid:
                raise ChecksumMismatchError(f"object {oid}", oid, got)

    def read(self, oid: str, max_size: int | None = None, buffer: memoryview | None = None) -> bytes:
        """The object's bytes, checked against ``oid`` as they are read (a corrupt copy in a pack is marked,
        so that a copy in another pack is read next time)."""
        size = self.size(oid)
        if max_size is not None and size > max_size:
            raise CorruptObjectError(oid, f"larger than {max_size} bytes")
        out = bytearray()
        for chunk in self.iter_chunks(oid, verify=True, buffer=buffer):
            out += chunk
            if len(out) > size:
                raise CorruptObjectError(oid, f"holds more than its {size} bytes")
        return bytes(out)
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
               compress_dtypes: dict[str, str] | None = None, progress: Any = None,
               bases: dict[str, str] | None = None) -> RepackReport:
        """Consolidate every pack and loose object last used before ``cutoff`` into one new pack, keeping only
        the objects in ``keep`` — and every object a delta that stays is decoded against, through its chain; then
        remove the old packs and loose files — each re-checked after it is taken away, so one a writer reused
        meanwhile stays. With ``compress_dtypes`` ({blob id: dtype}), newer packs are rewritten too (all their
        objects kept) and those blobs are stored compressed, each as the difference from ``bases[blob]`` when
        that is smaller (the caller keeps chains within ``compression.MAX_CHAIN`` and acyclic:
        :func:`adaptvc.ops.compress_plan.plan_compression`); every other delta is then stored decoded, so no
        chain grows behind the plan's back. Without, compressed objects (deltas too) are copied as stored.

        Every object copied is checked first; where an object has several copies, a good one is copied and the
        corrupt ones go with their old packs. An object with no good copy stops the repack before anything is
        removed. Packs that cannot be used are left alone (fsck reports them)."""
        from ..progress import SILENT

        progress = progress or SILENT
        report = RepackReport()
        self._load_packs()
        old, fresh = [], []
        for index in list(self._packs.values()):
            if index.name in self.bad_packs:
                continue
            st = self._pack_stat(index)
            if st is not None and stat.S_ISREG(st.st_mode):
                (old if st.st_mtime < cutoff else fresh).append(index)
        rewrite_fresh = bool(compress_dtypes)
        untouched = {oid for index in fresh for oid in index.ids()} if not rewrite_fresh else set()
        loose, young = [], set()
        for oid in self._loose_ids():
            files = self.object_files(oid)
            if files and max(st.st_mtime for _, st in files) < cutoff and all(stat.S_ISREG(st.st_mode)
                                                                           for _, st in files):
                loose.append(oid)
            else:
                young.add(oid)
        # a delta that stays must stay decodable: what stays as stored (newer packs, young loose files, and —
        # unless an aggressive repack re-encodes or decodes every object it copies — what is kept) keeps its
        # bases, through their chains
        keep = keep | self._bases_of(untouched | young | (set() if rewrite_fresh else keep), young | set(loose))
        removed: set[str] = set()
        for index in old:
            for entry in index:
                if entry.oid not in keep and entry.oid not in untouched and entry.oid not in removed:
                    removed.add(entry.oid)
                    report.removed.append(entry.oid)
                    report.bytes_freed += entry.length
        for oid in loose:
            if oid not in keep and oid not in removed:
                removed.add(oid)
                report.removed.append(oid)
                report.bytes_freed += sum(st.st_size for _, st in self.object_files(oid))
        if dry_run:
            return report
        if len(old) + (len(fresh) if rewrite_fresh else 0) <= 1 and not loose and not report.removed \
                and not compress_dtypes:
            return report  # one pack, nothing to drop or compress: already consolidated
        sources = [(index, True) for index in old] + [(index, False) for index in fresh if rewrite_fresh]
        chosen = self._verify_all(sources, keep, untouched)
        wanted = [oid for oid in loose if oid in keep and oid not in chosen and oid not in untouched]
        total = sum(entry.raw_size for _, entry in chosen.values()) + sum(self.size(o) for o in wanted)
        dtypes = compress_dtypes or {}
        planned = bases or {}
        first_new = len(self._written_packs)
        progress.begin("repack", total)
        try:
            for oid, (index, entry) in chosen.items():
                report.bytes_compressed += self._copy_packed(oid, index, entry, dtypes, planned, rewrite_fresh)
                progress.update(entry.raw_size)
            for oid in wanted:
                size = self.size(oid)
                report.bytes_compressed += self._copy_loose(oid, size, dtypes, planned)
                progress.update(size)
            self.flush()
        except BaseException:
            with self._lock:
                if self._writer is not None:  # nothing of a repack that failed half-way stays behind
                    self._writer.abort()
                    self._writer = None
            raise
        finally:
            progress.end()
        new = set(self._written_packs[first_new:])
        report.packs_written = len(new)
        for index, only_kept in sources:  # an old pack goes unless a writer reused it meanwhile; a newer one
            if index.name in new:  # was copied whole, so it just goes. A pack rewritten with the same objects
                continue  # at the same places has the same name: it is the new pack, it stays
            if self._retire_pack(index, cutoff if only_kept else None):
                report.packs_removed += 1
        for oid in loose:
            self.prune(oid, cutoff)
        self.end_session()
        return report

    def _verify_all(self, sources: list[tuple[PackIndex, bool]], keep: set[str],
                    untouched: set[str] | frozenset[str] = frozenset()) -> dict[str, tuple[PackIndex, Entry]]:
        """The copy to write of every object a repack copies, each checked against its id first: {id: (pack,
        entry)}. A corrupt copy is marked and another one taken (in another old pack, or the copy a newer pack
        keeps); an object with no good copy stops the repack (its error) before anything goes."""
        chosen: dict[str, tuple[PackIndex, Entry]] = {}
        failed: dict[str, BaseException] = {}
        kept_elsewhere: dict[str, bool] = {}  # objects a newer pack keeps: is that copy good?
        buffer = self._shared_buffer()
        for index, only_kept in sources:
            for i in range(index.count):
                entry = index.entry_at(i)
                oid = entry.oid
                if (only_kept and oid not in keep) or oid in chosen:
                    continue
                if oid in untouched:
                    if oid not in kept_elsewhere:
                        kept_elsewhere[oid] = self._good_copy_outside(oid, {ix.name for ix, _ in sources}, buffer)
                    if kept_elsewhere[oid]:
                        continue
                try:
                    self._verify_copy(index, i, entry, buffer)
                except (CorruptObjectError, ChecksumMismatchError) as e:
                    failed.setdefault(oid, e)
                    continue
                chosen[oid] = (index, entry)
        for oid, error in failed.items():
            if oid not in chosen:
                raise error
        return chosen

    def _good_copy_outside(self, oid: str, excluded: set[str], buffer: memoryview) -> bool:
        """Whether a pack not in ``excluded`` holds a copy of ``oid`` that hashes to it."""
        for index, i, entry in self._copies(oid, load=False):
            if index.name in excluded:
                continue
            try:
                self._verify_copy(index, i, entry, buffer)
                return True
            except (CorruptObjectError, ChecksumMismatchError, _PackGone):
                continue
        return False

    def _copy_packed(self, oid: str, index: PackIndex, entry: Entry, dtypes: dict[str, str],
                     bases: dict[str, str], reencode: bool) -> int:
        """Append one pack copy to the pack being written — as stored, streamed in blocks (raw bytes hashed
        again on the way), or (``reencode``: an aggressive repack) compressed when its dtype is known, against
        its planned base when that is smaller, and decoded when it is a delta outside the plan; the bytes
        saved."""
        if reencode and (oid in dtypes or (entry.encoding == COMPRESSED and self._stored_bases(oid))):
            with self._using(index):
                stored = index.view(entry)
            data = bytes(stored) if entry.encoding == RAW else \
                decode_object(oid, stored, self._stored_container, self._raw_chunks, entry.raw_size)
            if hash_bytes(data) != oid:
                raise _corrupt_copy(oid, index, hash_bytes(data))
            if oid in dtypes:
                return self._append_compressed(oid, data, dtypes[oid], bases.get(oid))
            with self._lock:
                self._ensure_writer().append(oid, [data], len(data), RAW)
            return 0
        h = new_hasher() if entry.encoding == RAW else None

        def stored() -> Iterator[memoryview]:
            buf = self._shared_buffer()
            with self._using(index):
                position = 0
                while position < entry.length:
                    n = index.read_into(entry, position, buf)
                    position += n
                    if h is not None:
                        h.update(buf[:n])
                    yield buf[:n]

        with self._lock:
            self._ensure_writer().append(oid, stored(), entry.raw_size, entry.encoding)
        if h is not None and h.hexdigest() != oid:  # changed since it was checked: the repack stops
            raise _corrupt_copy(oid, index, h.hexdigest())
        return 0

    def _copy_loose(self, oid: str, size: int, dtypes: dict[str, str], bases: dict[str, str]) -> int:
        """Append one loose object (decoded: a loose delta's chain is not copied) to the pack being written."""
        if oid in dtypes:
            return self._append_compressed(oid, self.read(oid), dtypes[oid], bases.get(oid))
        with self._lock:  # streamed, checked against its id as it goes (a mismatch stops the repack)
            self._ensure_writer().append(oid, self.iter_chunks(oid, verify=True), size, RAW)
        return 0

    def _append_compressed(self, oid: str, data: bytes, dtype: str, base_id: str | None = None) -> int:
        """Append ``data`` (the bytes of ``oid``) compressed when that pays and decodes back exactly — as the
        difference from object ``base_id`` when the store has it, of the same size, and that is smaller; saved."""
        base = self._base_bytes(base_id, len(data)) if base_id is not None and base_id != oid else None
        container = compress(data, dtype, base, base_id if base is not None else None)
        with self._lock:
            writer = self._ensure_writer()
            if container is not None and hash_bytes(
                    decompress(container, oid, len(data), None if base is None else [base])) == oid:
                writer.append(oid, [container], len(data), COMPRESSED)
                return len(data) - len(container)
            writer.append(oid, [data], len(data), RAW)
        return 0

    def _base_bytes(self, oid: str, size: int) -> bytes | None:
        """The bytes of a planned delta base, checked against its id (a copy stored raw preferred: no chain to
        decode); None when the store cannot give them or they are not ``size`` bytes (the object then stands on
        its own)."""
        try:
            if self.size(oid) != size:
                return None
            if self._stored_container(oid) is None:
                data = b"".join(bytes(chunk) for chunk in self._raw_chunks(oid))
            else:
                data = self.read(oid)
        except (ObjectNotFoundError, CorruptObjectError, ChecksumMismatchError, OSError):
            return None
        return data if len(data) == size and hash_bytes(data) == oid else None

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
        is elsewhere now, so it goes whatever happened to it); True when it is gone. The index goes first
        (readers stop seeing the pack), under a name that says whose it is: a gc killed before it decided
        leaves it in tmp/, from where the next gc puts it back if a writer reused the pack meanwhile."""
        fd = self._dir("objects", "pack")
        tmp_fd = self._dir("tmp", create=True)
        try:
            trash_idx, trash_pack = temp_name(f"{index.name}.gc-idx"), temp_name(f"{index.name}.gc-pack")
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

    # -- debris and damage ------------------------------------------------------------------------------------
    def _pack_debris(self, fd: int) -> list[tuple[str, os.stat_result]]:
        """What a killed writer or gc leaves in objects/pack: packs without an index, temporary files."""
        names = os.listdir(fd)
        present = set(names)
        out = []
        for name in sorted(names):
            orphan = name.endswith(".pack") and _is_pack_name(name[:-5]) and f"{name[:-5]}.idx" not in present
            if not (orphan or name.startswith(TEMP_PREFIX)):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if name.startswith(TEMP_PREFIX) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                out.append((name, st))
        return out

    def pack_debris(self) -> list[str]:
        """Names, in objects/pack, of packs without an index and of temporary files (what a killed commit or
        gc leaves there; gc removes them once older than its cut-off)."""
        try:
            fd = self._dir("objects", "pack")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return []
        try:
            return [name for name, _ in self._pack_debris(fd)]
        finally:
            os.close(fd)

    def prune_pack_debris(self, cutoff: float, dry_run: bool = False) -> int:
        """Remove packs without an index and temporary files from objects/pack when last written before
        ``cutoff`` (a writer still installing its pack has a live session, which moves the cut-off back before
        it began); how many."""
        try:
            fd = self._dir("objects", "pack")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return 0
        removed = 0
        try:
            for name, st in self._pack_debris(fd):
                if st.st_mtime >= cutoff:
                    continue
                if not dry_run and not self._remove_debris(fd, name, cutoff):
                    continue
                removed += 1
            if removed and not dry_run:
                os.fsync(fd)
        finally:
            os.close(fd)
        return removed

    def _remove_debris(self, fd: int, name: str, cutoff: float) -> bool:
        """Remove one piece of debris; an index-less pack is taken away first and checked again (an index that
        appeared, or a writer that touched it, meanwhile: it goes back)."""
        if name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                remove_tree(fd, name)
            return True
        tmp_fd = self._dir("tmp", create=True)
        try:
            trash = temp_name(f"{name[:-5]}.gc-orphan")
            try:
                os.rename(name, trash, src_dir_fd=fd, dst_dir_fd=tmp_fd)
            except FileNotFoundError:
                return False
            now = os.stat(trash, dir_fd=tmp_fd, follow_symlinks=False)
            try:
                os.stat(f"{name[:-5]}.idx", dir_fd=fd, follow_symlinks=False)
                indexed = True
            except FileNotFoundError:
                indexed = False
            if indexed or now.st_mtime >= cutoff:
                os.rename(trash, name, src_dir_fd=tmp_fd, dst_dir_fd=fd)
                return False
            os.unlink(trash, dir_fd=tmp_fd)
            return True
        finally:
            os.close(tmp_fd)

    def reinstate_packs(self, cutoff: float) -> int:
        """Give back its index to each pack without one that was used at or after ``cutoff`` and whose index a
        gc killed half-way left in tmp/ (it takes the index away first, then checks whether a writer reused the
        pack meanwhile: see :meth:`_retire_pack`); how many. gc runs this before it walks the history."""
        try:
            fd = self._dir("objects", "pack")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return 0
        try:
            tmp_fd = self._dir("tmp")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            os.close(fd)
            return 0
        done = 0
        try:
            trash = [n for n in os.listdir(tmp_fd) if n.startswith(TEMP_PREFIX) and n.endswith(".gc-idx")]
            if not trash:
                return 0
            young = {name[:-5] for name, st in self._pack_debris(fd)
                     if name.endswith(".pack") and st.st_mtime >= cutoff and stat.S_ISREG(st.st_mode)}
            for name in trash:
                stem = name[:-len(".gc-idx")].rpartition("-pack-")[2]
                if f"pack-{stem}" not in young:
                    continue
                with contextlib.suppress(FileExistsError, FileNotFoundError):
                    os.link(name, f"pack-{stem}.idx", src_dir_fd=tmp_fd, dst_dir_fd=fd, follow_symlinks=False)
                    os.unlink(name, dir_fd=tmp_fd)
                    done += 1
            if done:
                os.fsync(fd)
                self._packs_seen = None  # look at the folder again
        finally:
            os.close(fd)
            os.close(tmp_fd)
        return done

    def check_packs(self) -> list[PackProblem]:
        """Check every copy of every object in every pack (those this process has not checked yet) and say
        what cannot be used: each pack that cannot be read, each corrupt copy (naming its pack, and whether
        another copy of the object is intact)."""
        self._load_packs()
        buffer = self._shared_buffer()
        for index in list(self._packs.values()):
            try:
                with self._using(index):
                    for i in range(index.count):
                        if index.state(i) == UNKNOWN:
                            with contextlib.suppress(CorruptObjectError, ChecksumMismatchError):
                                self._verify_copy(index, i, index.entry_at(i), buffer)
                            if index.name in self.bad_packs:
                                break
            except (CorruptPackError, _PackGone):
                continue
        problems = [PackProblem(name, None, why) for name, why in sorted(self.bad_packs.items())]
        for (name, oid), why in sorted(self.bad_copies.items()):
            intact = any(index.state(i) == GOOD for index, i, _ in self._copies(oid, load=False)) or \
                self._lstat(oid) is not None or self._lstat(oid, ".z") is not None
            problems.append(PackProblem(name, oid, why, intact))
        return problems

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

