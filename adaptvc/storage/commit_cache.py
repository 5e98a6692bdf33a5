"""The commit cache (``.adaptvc/commit-cache``): every commit's canonical bytes in one file, so ``log`` of
10,000 commits reads one file instead of opening 10,000 objects — what git's commit-graph file does for it.

A cache, never a source of truth: each commit's bytes are re-hashed against its id when used (an entry that
does not match is ignored), a damaged or foreign file is ignored as a whole, and losing it costs only time.
Commits are immutable, so an entry never goes stale; one gc removed is merely never asked for again.

Layout: ``b"AVCC"``, u32 version (1), u32 count, then each commit: its id (16 bytes), u32 length, its bytes.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

from ..hashing import hash_bytes
from .atomic import read_file, write_atomic

MAGIC = b"AVCC"
VERSION = 1
NAME = "commit-cache"
HEADER = struct.Struct("<4sII")
ENTRY = struct.Struct("<16sI")
#: a cache larger than this is not ours (10,000 commits take about 5 MB)
MAX_BYTES = 1 << 30


class CommitCache:
    def __init__(self, admin_dir: Path) -> None:
        self.admin_dir = admin_dir
        self.entries: dict[str, bytes] = {}
        self.dirty = False
        self._load()

    def _load(self) -> None:
        try:
            data = read_file(self.admin_dir, NAME, MAX_BYTES)
        except (OSError, ValueError):
            return
        if not data or len(data) < HEADER.size:
            return
        magic, version, count = HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            return
        view, pos, entries = memoryview(data), HEADER.size, {}
        for _ in range(count):
            if pos + ENTRY.size > len(data):
                return
            raw_id, length = ENTRY.unpack_from(data, pos)
            pos += ENTRY.size
            if pos + length > len(data):
                return
            entries[raw_id.hex()] = bytes(view[pos:pos + length])
            pos += length
        self.entries = entries

    def get(self, oid: str) -> bytes | None:
        """The commit's bytes, when cached and still hashing to ``oid``."""
        data = self.entries.get(oid)
        if data is None:
            return None
        if hash_bytes(data) != oid:
            del self.entries[oid]
            return None
        return data

    def add(self, oid: str, data: bytes) -> None:
        if oid not in self.entries:
            self.entries[oid] = data
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        parts = [HEADER.pack(MAGIC, VERSION, len(self.entries))]
        for oid, data in self.entries.items():
            parts += [ENTRY.pack(bytes.fromhex(oid), len(data)), data]
        with contextlib.suppress(OSError):  # a cache: best effort
            write_atomic(self.admin_dir, NAME, b"".join(parts), durable=False)
        self.dirty = False
