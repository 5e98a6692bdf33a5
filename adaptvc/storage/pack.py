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
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
#: an index of more entries than this is not one of ours (a pack of 1 KB tensors filling 64 GB)
MAX_ENTRIES = 1 << 26


@dataclass(frozen=True)
class Entry:
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


def pack_name(index: bytes) -> str:
    """A pack's name: the hash of its index's entry table (the same objects at the same places: same name)."""
    count = HEADER.unpack_from(index)[2]
    start = HEADER.size + FANOUT.size
    h = new_hasher()
    h.update(index[start:start + count * ENTRY.size])
    return h.hexdigest()


class PackIndex:
    """One pack and its index, opened for reading. The index is checked whole when opened (header, sizes,
    sort order, fan-out, its own hash); each object is checked against its id when read."""

    def __init__(self, idx_path: Path, data: bytes) -> None:
        self.idx_path = idx_path
        self.pack_path = idx_path.with_suffix(".pack")
        self.name = idx_path.stem
        what = f"pack index {idx_path.name}"
        if len(data) < HEADER.size + FANOUT.size + TRAILER.size:
            raise CorruptPackError(what, "truncated")
        magic, version, count, _ = HEADER.unpack_from(data)
        if magic != INDEX_MAGIC or version != VERSION:
            raise CorruptPackError(what, "not a pack index of format 2")
        if count > MAX_ENTRIES or len(data) != HEADER.size + FANOUT.size + count * ENTRY.size + TRAILER.size:
            raise CorruptPackError(what, "its size does not match its entry count")
        self.pack_size, self.pack_hash, digest = TRAILER.unpack_from(data, len(data) - TRAILER.size)
        h = new_hasher()
        h.update(memoryview(data)[: len(data) - 16])
        if h.digest() != digest:
            raise CorruptPackError(what, "its checksum does not match")
        self.count = count
        self._table = memoryview(data)[HEADER.size + FANOUT.size: HEADER.size + FANOUT.size + count * ENTRY.size]
        self._ids = [bytes(self._table[i * ENTRY.size: i * ENTRY.size + 16]) for i in range(count)]
        if any(a >= b for a, b in zip(self._ids, self._ids[1:], strict=False)):
            raise CorruptPackError(what, "entries are not sorted")
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None

    def entry_at(self, i: int) -> Entry:
        raw_id, offset, length, raw_size, encoding = ENTRY.unpack_from(self._table, i * ENTRY.size)
        return Entry(raw_id.hex(), offset, length, raw_size, encoding)

    def find(self, oid: str) -> Entry | None:
        key = bytes.fromhex(oid)
        i = bisect.bisect_left(self._ids, key)
        if i < self.count and self._ids[i] == key:
            return self.entry_at(i)
        return None

    def __iter__(self) -> Iterator[Entry]:
        for i in range(self.count):
            yield self.entry_at(i)

    def ids(self) -> Iterator[str]:
        for raw in self._ids:
            yield raw.hex()

    def open(self, fd: int) -> None:
        """Map the pack file (opened by the store without following links) for reading."""
        size = os.fstat(fd).st_size
        if size != self.pack_size:
            os.close(fd)
            raise CorruptPackError(f"pack {self.pack_path.name}", f"it is {size} bytes, its index says "
                                                                  f"{self.pack_size}")
        self._fd = fd
        self._mmap = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def view(self, entry: Entry) -> memoryview:
        """The stored bytes of ``entry`` (a view of the mapped pack: zero-copy)."""
        if self._mmap is None:
            raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} is empty")
        if entry.offset < len(PACK_HEADER) or entry.offset + entry.length > self.pack_size:
            raise CorruptObjectError(entry.oid, f"its place in pack {self.pack_path.name} is outside the pack")
        return memoryview(self._mmap)[entry.offset: entry.offset + entry.length]

    def read_into(self, entry: Entry, position: int, buffer: memoryview) -> int:
        """Copy stored bytes of ``entry`` from ``position`` into ``buffer`` (plain reads: memory stays flat,
        unlike a mapping that would count every page of the pack as resident); how many were copied."""
        if self._fd is None:
            raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} is not open")
        if entry.offset < len(PACK_HEADER) or entry.offset + entry.length > self.pack_size:
            raise CorruptObjectError(entry.oid, f"its place in pack {self.pack_path.name} is outside the pack")
        want = min(len(buffer), entry.length - position)
        got = os.preadv(self._fd, [buffer[:want]], entry.offset + position)
        if got != want:
            raise CorruptObjectError(entry.oid, f"pack {self.pack_path.name} ended early")
        return got

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._mmap = None  # released when the last view of it goes


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

    def _write(self, data: bytes | memoryview) -> None:
        self._write_all(self.fd, data)
        self._hash.update(data)
        self.size += len(data)

    def append(self, oid: str, chunks: list[bytes | memoryview], raw_size: int, encoding: int = RAW) -> None:
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
        os.close(self.fd)
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
        os.close(self.tmp_fd)
        return name, index

    def abort(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp_name, dir_fd=self.tmp_fd)
        with contextlib.suppress(OSError):
            os.close(self.tmp_fd)
