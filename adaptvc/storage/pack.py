"""Packs (store format 2): the objects a commit writes, appended to one file, found through a sorted index.

One commit writes one pack (``objects/pack/pack-<name>.pack``) and its index (``pack-<name>.idx``) instead of
one file per tensor: a fully changed 320 MB adapter of 448 tensors is two files and four fsyncs, not 450 files
and 660 fsyncs. The bytes of ``docs/format.md`` ("Format 2"), pinned by ``tests/test_packs.py``:

Pack: ``b"AVPK"``, u32 version (2), u32 zero, then each object's stored bytes back to back.

Index: ``b"AVIX"``, u32 version (2), u32 count, u32 zero; a fan-out table of 256 u32 (entries whose id's
first byte is ≤ i); ``count`` entries of 48 bytes sorted by id — id (16 bytes), u64 offset, u64 stored length,
u64 raw size, u8 encoding (0 raw, 1 compressed container ``AVZ1``), 7 zero bytes; then u64 pack size, the
xxh3-128 of the whole pack (16 bytes) and the xxh3-128 of every index byte before it (16 bytes). All integers
little-endian. The pack's name is the xxh3-128 of the index's entry table.

A pack is written to a temporary name, fsynced, and renamed into place before its index: a reader only ever
sees packs that have an index, and an index is never renamed before its pack is durable.

Reading is bounded and never trusts the files: an index is opened without following a link or waiting on a
pipe, must be a regular file whose size is exactly what its header's count needs (at most
:data:`MAX_ENTRIES` entries), and is checked whole (checksum, strict sort order, fan-out table) before it is
used; it is then searched in place (no object per entry). A pack is never mapped into memory: its bytes are
copied out with ``pread`` into bounded buffers, so a pack cut short under a reader is an error, never a crash.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import operator
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ..errors import CorruptObjectError, CorruptPackError
from ..hashing import new_hasher

PACK_MAGIC = b"AVPK"
INDEX_MAGIC = b"AVIX"
VERSION = 2
PACK_HEADER = struct.pack("<4sII", PACK_MAGIC, VERSION, 0)
ENTRY = struct.Struct("<16sQQQB7x")
TRAILER = struct.Struct("<Q16s16s")
HEADER = struct.Struct("<4sIII")
FANOUT = struct.Struct("<256I")
RAW, COMPRESSED = 0, 1
#: the most objects one pack holds: its index (48 bytes an entry, 48 MiB at most) is read whole and kept in
#: memory, so an index claiming more is refused before anything is read; a writer starts a new pack at this
#: many (a consolidating gc of a larger store writes several packs)
MAX_ENTRIES = 1 << 20
#: what this process has learnt of one copy of an object (a pack entry): not read yet, verified, corrupt
UNKNOWN, GOOD, BAD = 0, 1, 2

_TABLE = HEADER.size + FANOUT.size
_SMALLEST_INDEX = _TABLE + TRAILER.size
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SORT_BLOCK = 1 << 16  # entries compared per step of the sort check (bounded transient memory)
_HEX_BYTES = frozenset(f"{b:02x}" for b in range(256))


def open_nofollow(dir_fd: int, name: str, what: str) -> int:
    """``name`` in ``dir_fd`` opened for reading, never through a link and never waiting for the writer of a
    named pipe (the caller checks what it is with fstat). CorruptPackError (naming ``what``) for a link, a
    socket or a device; FileNotFoundError when it is absent."""
    try:
        return os.open(name, _OPEN, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CorruptPackError(what, "it is a symbolic link (adaptvc never follows one)") from None
        if e.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise CorruptPackError(what, "not a regular file") from None
        raise


def open_regular(dir_fd: int, name: str, what: str) -> tuple[int, os.stat_result]:
    """:func:`open_nofollow`, and its fstat once it is a regular file (CorruptPackError otherwise)."""
    fd = open_nofollow(dir_fd, name, what)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptPackError(what, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_index(dir_fd: int, name: str, idx_path: Path) -> PackIndex:
    """Open and check the index of pack ``name`` (``<name>.idx`` in ``dir_fd``): its size must be exactly what
    the count in its header needs, which is checked before a byte more is read."""
    what = f"pack index {name}.idx"
    fd, st = open_regular(dir_fd, f"{name}.idx", what)
    try:
        size = st.st_size
        if size < _SMALLEST_INDEX:
            raise CorruptPackError(what, "truncated")
        _check_header(os.pread(fd, HEADER.size, 0), size, what)
        data = bytearray(size)
        view, done = memoryview(data), 0
        while done < size:
            n = os.preadv(fd, [view[done:]], done)
            if n <= 0:
                raise CorruptPackError(what, "it ended early (changed while read)")
            done += n
    finally:
        os.close(fd)
    return PackIndex(idx_path, data)


def _check_header(head: bytes | bytearray | memoryview, size: int, what: str) -> int:
    """The entry count of an index of ``size`` bytes starting with ``head``, once it is plausible."""
    if len(head) < HEADER.size:
        raise CorruptPackError(what, "truncated")
    magic, version, count, _ = HEADER.unpack_from(head)
    if magic != INDEX_MAGIC or version != VERSION:
        raise CorruptPackError(what, "not a pack index of format 2")
    if count > MAX_ENTRIES:
        raise CorruptPackError(what, f"it claims {count} objects, more than a pack may hold ({MAX_ENTRIES})")
    if size != _SMALLEST_INDEX + count * ENTRY.size:
        raise CorruptPackError(what, "its size does not match its entry count")
    return count


class Entry(NamedTuple):
    """One object in a pack: its id, where its stored bytes are, its raw size and how it is stored."""

    oid: str
    offset: int
    length: int
    raw_size: int
    encoding: int


def encode_index(entries: list[Entry], pack_size: int, pack_hash: bytes) -> bytes:
    """The index bytes for ``entries`` (any order) of a pack of ``pack_size`` bytes hashing to ``pack_hash``."""
    ordered = sorted(entries, key=lambda e: e.oid)
    fanout = [0] * 256
    for e in ordered:
        fanout[int(e.oid[:2], 16)] += 1
    for i in range(1, 256):
        fanout[i] += fanout[i - 1]
    table = b"".join(ENTRY.pack(bytes.fromhex(e.oid), e.offset, e.length, e.raw_size, e.encoding) for e in ordered)
    body = HEADER.pack(INDEX_MAGIC, VERSION, len(ordered), 0) + FANOUT.pack(*fanout) + table
    h = new_hasher()
    h.update(body + struct.pack("<Q16s", pack_size, pack_hash))
    return body + TRAILER.pack(pack_size, pack_hash, h.digest())


def pack_name(index: bytes | bytearray) -> str:
    """A pack's name: the hash of its index's entry table (the same objects at the same places: same name)."""
    count = HEADER.unpack_from(index)[2]
    h = new_hasher()
    h.update(memoryview(index)[_TABLE:_TABLE + count * ENTRY.size])
    return h.hexdigest()


class PackIndex:
    """One pack and its index, opened for reading. The index is checked whole when opened (header, size, its
    own hash, strict sort order, fan-out table) and then searched in place: the fan-out table narrows a lookup
    to the ids sharing its first byte, a binary search over the entry table does the rest. Each object is
    checked against its id when read. The pack file is opened lazily (:meth:`open`) and read with ``pread``
    only."""

    def __init__(self, idx_path: Path, data: bytes | bytearray) -> None:
        self.idx_path = idx_path
        self.pack_path = idx_path.with_suffix(".pack")
        self.name = idx_path.stem
        what = f"pack index {idx_path.name}"
        if len(data) < _SMALLEST_INDEX:
            raise CorruptPackError(what, "truncated")
        count = _check_header(data, len(data), what)
        self.pack_size, self.pack_hash, digest = TRAILER.unpack_from(data, len(data) - TRAILER.size)
        h = new_hasher()
        h.update(memoryview(data)[: len(data) - 16])
        if h.digest() != digest:
            raise CorruptPackError(what, "its checksum does not match")
        self.count = count
        self._data = data
        self._fanout = FANOUT.unpack_from(data, HEADER.size)
        self._check_order(what)
        self._state: bytearray | None = None  # UNKNOWN / GOOD / BAD of each entry, once one is checked
        self._fd: int | None = None
        self.users = 0  # readers using the open pack right now (the store never closes it under them)

    def _check_order(self, what: str) -> None:
        """Ids strictly increasing (so: no id twice), and the fan-out table saying where each first byte ends."""
        data, step, previous = self._data, ENTRY.size, None
        for start in range(0, self.count, _SORT_BLOCK):
            stop = min(self.count, start + _SORT_BLOCK)
            ids = [data[p:p + 16] for p in range(_TABLE + start * step, _TABLE + stop * step, step)]
            if previous is not None and not previous < ids[0]:
                raise CorruptPackError(what, "entries are not sorted (or an id is there twice)")
            if not all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
                raise CorruptPackError(what, "entries are not sorted (or an id is there twice)")
            previous = ids[-1]
        firsts = data[_TABLE:_TABLE + self.count * step:step]  # the first byte of every id, in order
        if any(self._fanout[b] != bisect.bisect_right(firsts, b) for b in range(256)):
            raise CorruptPackError(what, "its fan-out table does not match its entries")

    # -- the index --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.count

    def entry_at(self, i: int) -> Entry:
        raw_id, offset, length, raw_size, encoding = ENTRY.unpack_from(self._data, _TABLE + i * ENTRY.size)
        return Entry(raw_id.hex(), offset, length, raw_size, encoding)

    def position(self, oid: str) -> int:
        """Where ``oid`` is in the entry table (-1: not in this pack). ``oid`` is a valid object id."""
        key = bytes.fromhex(oid)
        first = key[0]
        lo = self._fanout[first - 1] if first else 0
        hi = self._fanout[first]
        data, step = self._data, ENTRY.size
        while lo < hi:
            mid = (lo + hi) >> 1
            p = _TABLE + mid * step
            here = data[p:p + 16]
            if here < key:
                lo = mid + 1
            elif here == key:
                return mid
            else:
                hi = mid
        return -1

    def find(self, oid: str) -> Entry | None:
        i = self.position(oid)
        return self.entry_at(i) if i >= 0 else None

    def __iter__(self) -> Iterator[Entry]:
        for i in range(self.count):
            yield self.entry_at(i)

    def ids(self, prefix: str = "") -> Iterator[str]:
        """The ids of this pack (those starting with ``prefix``, hex, when given), in order."""
        lo, hi = 0, self.count
        if len(prefix) >= 2:
            if prefix[:2] not in _HEX_BYTES:
                return
            first = int(prefix[:2], 16)
            lo, hi = (self._fanout[first - 1] if first else 0), self._fanout[first]
        data, step = self._data, ENTRY.size
        for i in range(lo, hi):
            oid = bytes(data[_TABLE + i * step:_TABLE + i * step + 16]).hex()
            if oid.startswith(prefix):
                yield oid

    # -- what this process learnt of each copy --------------------------------------------------------------
    def state(self, i: int) -> int:
        return self._state[i] if self._state is not None else UNKNOWN

    def mark(self, i: int, state: int) -> None:
        if self._state is None:
            self._state = bytearray(self.count)
        self._state[i] = state

    # -- the pack ---------------------------------------------------------------------------------------------
    def open(self, fd: int) -> None:
        """Use ``fd``, the pack file opened by the store (without following a link, without waiting on a pipe),
        once it is a regular file of the size its index says; it is closed on refusal."""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CorruptPackError(f"pack {self.pack_path.name}", "not a regular file")
            if st.st_size != self.pack_size:
                raise CorruptPackError(f"pack {self.pack_path.name}", f"it is {st.st_size} bytes, its index says "
                                                                      f"{self.pack_size}")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _check(self, entry: Entry) -> int:
        if self._fd is None:
            raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} is not open")
        if entry.offset < len(PACK_HEADER) or entry.offset + entry.length > self.pack_size:
            raise CorruptObjectError(entry.oid, f"its place in pack {self.pack_path.name} is outside the pack")
        return self._fd

    def view(self, entry: Entry) -> bytes:
        """The stored bytes of ``entry``, copied out of the pack with plain reads (at most the pack's checked
        size): a pack cut short meanwhile is an error here, where a mapping would kill the process."""
        fd = self._check(entry)
        data = os.pread(fd, entry.length, entry.offset)
        if len(data) == entry.length:
            return data
        parts = [data]
        done = len(data)
        while done < entry.length:  # a short read: a pack cut short, or a read of more than 2 GB
            part = os.pread(fd, entry.length - done, entry.offset + done)
            if not part:
                raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} ended early")
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def read_into(self, entry: Entry, position: int, buffer: memoryview) -> int:
        """Copy stored bytes of ``entry`` from ``position`` into ``buffer`` (plain reads: memory stays flat,
        unlike a mapping that would count every page of the pack as resident); how many were copied."""
        fd = self._check(entry)
        want = min(len(buffer), entry.length - position)
        done = 0
        while done < want:
            n = os.preadv(fd, [buffer[done:want]], entry.offset + position + done)
            if n <= 0:
                raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} ended early")
            done += n
        return done

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PackWriter:
    """Appends objects to a new pack in the store's ``tmp/`` (same file system); :meth:`finish` makes it
    durable and renames it, then its index, into ``objects/pack/``."""

    def __init__(self, tmp_fd: int, tmp_name: str) -> None:
        from .atomic import write_all

        self._write_all = write_all
        self.tmp_fd = tmp_fd  # the store's tmp/ folder (owned by the writer: closed in finish/abort)
        self.tmp_name = tmp_name
        # readable too: an object appended but not yet flushed may be read back (a commit reads its config)
        self.fd = os.open(tmp_name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444,
                          dir_fd=tmp_fd)
        self.entries: dict[str, Entry] = {}
        self.size = 0
        self._hash = new_hasher()
        self._write(PACK_HEADER)

    @property
    def full(self) -> bool:
        """It holds as many objects as a pack may (:data:`MAX_ENTRIES`): the store starts another pack."""
        return len(self.entries) >= MAX_ENTRIES

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._write_all(self.fd, data)
        self._hash.update(data)
        self.size += len(data)

    def append(self, oid: str, chunks: Iterable[bytes | bytearray | memoryview], raw_size: int,
               encoding: int = RAW) -> None:
        """Append one object's stored bytes (written as ``chunks`` come: a generator streams a large object)."""
        offset = self.size
        for c in chunks:
            self._write(c)
        self.entries[oid] = Entry(oid, offset, self.size - offset, raw_size, encoding)

    def append_stream(self, f, size: int, block: int) -> tuple[str, int]:
        """Append ``size`` bytes read from ``f``; returns (their id, their offset). :meth:`drop_last` takes them
        back when the object turns out to exist already."""
        offset = self.size
        h = new_hasher()
        remaining = size
        while remaining:
            chunk = f.read(min(block, remaining))
            if not chunk:
                raise EOFError("file ended early")
            h.update(chunk)
            self._write(chunk)
            remaining -= len(chunk)
        return h.hexdigest(), offset

    def drop_tail(self, offset: int) -> None:
        """Forget everything written after ``offset`` (a duplicate streamed in before its id was known)."""
        os.ftruncate(self.fd, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)
        self.size = offset
        self._hash = new_hasher()  # recomputed from the file in finish()
        self._rehash = True

    def read(self, entry: Entry) -> bytes:
        return os.pread(self.fd, entry.length, entry.offset)

    def finish(self, pack_dir_fd: int) -> tuple[str, bytes]:
        """Fsync the pack, rename it into ``pack_dir_fd``, then write and rename its index; (name, index)."""
        if getattr(self, "_rehash", False):
            self._hash = new_hasher()
            pos = 0
            while pos < self.size:
                chunk = os.pread(self.fd, min(8 << 20, self.size - pos), pos)
                self._hash.update(chunk)
                pos += len(chunk)
        os.fsync(self.fd)
        fd, self.fd = self.fd, -1
        os.close(fd)
        index = encode_index(list(self.entries.values()), self.size, self._hash.digest())
        name = f"pack-{pack_name(index)}"
        from .atomic import create_exclusive, temp_name, write_all

        os.rename(self.tmp_name, f"{name}.pack", src_dir_fd=self.tmp_fd, dst_dir_fd=pack_dir_fd)
        idx_tmp = temp_name(f"{name}.idx")
        fd = create_exclusive(pack_dir_fd, idx_tmp, 0o444)
        try:
            write_all(fd, index)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(idx_tmp, f"{name}.idx", src_dir_fd=pack_dir_fd, dst_dir_fd=pack_dir_fd)
        os.fsync(pack_dir_fd)
        fd, self.tmp_fd = self.tmp_fd, -1
        os.close(fd)
        return name, index

    def abort(self) -> None:
        """Remove the temporary pack (if :meth:`finish` has not renamed it yet) and close what is open."""
        import contextlib

        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.tmp_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp_name, dir_fd=self.tmp_fd)
            with contextlib.suppress(OSError):
                os.close(self.tmp_fd)
            self.tmp_fd = -1
