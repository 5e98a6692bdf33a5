"""Object ids: the xxh3-128 of an object's bytes, as 32 lower-case hex digits."""

from __future__ import annotations

import re
from typing import BinaryIO

import xxhash

HASH_NAME = "xxh3-128"
HEX_LEN = 32
_HEX_RE = re.compile(r"[0-9a-f]{32}")

#: Reads and copies go through buffers of this size: large enough that syscalls cost nothing,
#: small enough that memory stays flat whatever the file size.
BLOCK_SIZE = 8 << 20

Hasher = xxhash.xxh3_128


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def new_hasher() -> xxhash.xxh3_128:
    return xxhash.xxh3_128()


def is_object_id(text: str) -> bool:
    return bool(_HEX_RE.fullmatch(text))


def hash_stream(f: BinaryIO, size: int | None = None) -> tuple[str, int]:
    """Hash ``size`` bytes (or everything) from ``f`` in large blocks; return (id, bytes read)."""
    h = new_hasher()
    buf = bytearray(BLOCK_SIZE)
    view = memoryview(buf)
    total = 0
    while size is None or total < size:
        want = BLOCK_SIZE if size is None else min(BLOCK_SIZE, size - total)
        n = f.readinto(view[:want])
        if not n:
            break
        h.update(view[:n])
        total += n
    return h.hexdigest(), total
