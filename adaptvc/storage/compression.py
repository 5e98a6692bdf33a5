"""Lossless compression of stored blobs, modelled on ZipNN: group the bytes of each number by position, then
zstd each group. In bf16/fp16 the high byte (sign + exponent) of trained weights takes few values and
compresses well; the low byte (mantissa) is close to random and is stored as it is when zstd cannot shrink it.

A compressed object lives at ``objects/ab/cdef….z`` and its id is still the hash of the *uncompressed*
bytes. Commits write raw objects (fast); ``adaptvc gc --aggressive`` compresses them where it pays.

Container: ``b"AVZ1"``, one byte of codec (1 plain; 2, 4, 8: bytes grouped by position; 66: bf16 exponent /
sign+mantissa split), the 8-byte raw length, one byte of group count, then each group: one byte of encoding
(0 raw, 1 zstd) + 8-byte length + bytes.

A container is hostile input (it may come from a remote): its header is checked against its own size, it is
decoded as a stream in bounded blocks, and no group may produce a byte more than the header announced — a
container declaring 2⁶² bytes, or 45 KB that inflate to 1.5 GB, costs a few megabytes and one error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import CorruptObjectError
from ..safetensors_format import DTYPES

MAGIC = b"AVZ1"
#: keep a compressed copy only when it is at most this fraction of the raw bytes
WORTHWHILE = 0.92
#: dtypes whose bytes are grouped by position: floating point of 2, 4 or 8 bytes
ELEMENT_SIZE = {name: d.bits // 8 for name, d in DTYPES.items() if d.floating and d.bits in (16, 32, 64)}
BF16_CODEC = 66
CODECS = {1: 1, 2: 2, 4: 4, 8: 8, BF16_CODEC: 2}  # codec -> number of groups
LEVEL = 1  # for byte planes of weights, level 1 compresses as well as 9 (its entropy coder does the work), fastest
#: no object is larger than this (1 TiB): a bigger declared size is damage, not data
MAX_RAW_SIZE = 1 << 40
#: zstd may not ask for a larger back-reference window than this when decoding (our encoder uses 512 KB)
MAX_WINDOW = 1 << 25
#: output block of the streaming decoder, in elements
BLOCK_ELEMENTS = 1 << 21


def _zstd():
    import zstandard

    return zstandard


def _split(data: bytes, dtype: str | None) -> tuple[int, list[bytes]]:
    """(codec, byte groups). Codec 1: plain; 66: bf16 as exponent byte + sign/mantissa byte (the exponent
    byte of trained weights has a few bits of entropy, the rest is near random); k >= 2 otherwise: the k
    bytes of each element grouped by position."""
    import numpy as np

    k = ELEMENT_SIZE.get(dtype or "", 1)
    if k == 1 or len(data) % k:
        return 1, [data]
    if dtype == "BF16":
        v = np.frombuffer(data, dtype="<u2")
        exponent = ((v >> 7) & 0xFF).astype(np.uint8)
        sign_mantissa = (((v >> 8) & 0x80) | (v & 0x7F)).astype(np.uint8)
        return BF16_CODEC, [exponent.tobytes(), sign_mantissa.tobytes()]
    planes = np.frombuffer(data, dtype=np.uint8).reshape(-1, k).T
    return k, [planes[i].tobytes() for i in range(k)]


def _join(codec: int, groups: list[bytes | memoryview], n: int) -> bytes:
    """The raw bytes of ``n`` bytes' worth of elements, from their byte groups."""
    import numpy as np

    if codec == 1:
        return bytes(groups[0])
    if codec == BF16_CODEC:  # exponent << 7 | sign << 15 | mantissa, in place where numpy allows
        exponent = np.frombuffer(groups[0], dtype=np.uint8)
        sign_mantissa = np.frombuffer(groups[1], dtype=np.uint8)
        out = np.left_shift(exponent, 7, dtype=np.uint16)
        out |= np.left_shift(np.bitwise_and(sign_mantissa, 0x80), 8, dtype=np.uint16)
        out |= np.bitwise_and(sign_mantissa, 0x7F)
        return out.astype("<u2", copy=False).tobytes()
    width = {2: "<u2", 4: "<u4", 8: "<u8"}[codec]
    out = np.zeros(n // codec, dtype=width)
    for i, g in enumerate(groups):  # byte i of each little-endian element
        out |= np.frombuffer(g, dtype=np.uint8).astype(width) << (8 * i)
    return out.tobytes()


def compress(data: bytes, dtype: str | None = None) -> bytes | None:
    """The container for ``data`` (the values of a tensor of ``dtype``, or any bytes), or None when
    compression does not pay."""
    codec, groups = _split(data, dtype)
    zstd = _zstd().ZstdCompressor(level=LEVEL)
    parts = [MAGIC, struct.pack("<BQ", codec, len(data)), struct.pack("<B", len(groups))]
    for g in groups:
        packed = zstd.compress(g)
        if len(packed) < 0.98 * len(g):
            parts += [struct.pack("<BQ", 1, len(packed)), packed]
        else:
            parts += [struct.pack("<BQ", 0, len(g)), g]
    out = b"".join(parts)
    return out if len(out) <= WORTHWHILE * len(data) else None


@dataclass(frozen=True)
class Container:
    codec: int
    raw_size: int
    groups: tuple[tuple[int, int, int], ...]  # (encoding, offset, length) of each group in the container


def parse_container(container: bytes | memoryview, oid: str = "?") -> Container:
    """Check a container's header against its own length; CorruptObjectError when it does not add up."""
    view = memoryview(container)
    try:
        if bytes(view[:4]) != MAGIC:
            raise ValueError("bad magic")
        codec, n = struct.unpack_from("<BQ", view, 4)
        (count,) = struct.unpack_from("<B", view, 13)
        if codec not in CODECS or count != CODECS[codec]:
            raise ValueError(f"unknown codec {codec} with {count} groups")
        if n > MAX_RAW_SIZE or n % CODECS[codec]:
            raise ValueError(f"declares {n} bytes")
        pos, groups = 14, []
        for _ in range(count):
            enc, length = struct.unpack_from("<BQ", view, pos)
            pos += 9
            if enc not in (0, 1) or pos + length > len(view):
                raise ValueError("truncated or unknown group")
            if enc == 0 and length != n // count:
                raise ValueError("a raw group of the wrong size")
            groups.append((enc, pos, length))
            pos += length
        if pos != len(view):
            raise ValueError("trailing bytes")
    except (ValueError, struct.error) as e:
        raise CorruptObjectError(oid, f"compressed object is damaged ({e})") from None
    return Container(codec, n, tuple(groups))


def raw_size(container: bytes | memoryview, oid: str = "?") -> int:
    return parse_container(container, oid).raw_size


def iter_decompress(container: bytes | memoryview, oid: str = "?") -> Iterator[bytes]:
    """The raw bytes of a container, in blocks of at most a few megabytes; CorruptObjectError as soon as a
    group holds more or fewer bytes than the header announced."""
    zstd = _zstd()
    view = memoryview(container)
    c = parse_container(view, oid)
    per_group = c.raw_size // len(c.groups)
    readers = []
    try:
        for enc, off, length in c.groups:
            part = view[off:off + length]
            if enc == 1:
                dctx = zstd.ZstdDecompressor(max_window_size=MAX_WINDOW)
                readers.append(dctx.stream_reader(part, read_across_frames=True))
            else:
                readers.append(part)
        block = BLOCK_ELEMENTS
        done = 0
        while done < per_group:
            want = min(block, per_group - done)
            pieces = []
            for r in readers:
                piece = bytes(r[done:done + want]) if isinstance(r, memoryview) else _read_exactly(r, want, oid)
                pieces.append(piece)
            done += want
            yield _join(c.codec, pieces, want * len(c.groups))
        for r in readers:
            if not isinstance(r, memoryview) and r.read(1):
                raise CorruptObjectError(oid, "compressed object is damaged (a group is longer than announced)")
    except zstd.ZstdError as e:
        raise CorruptObjectError(oid, f"compressed object is damaged ({e})") from None
    finally:
        for r in readers:
            if not isinstance(r, memoryview):
                r.close()


def _read_exactly(reader, n: int, oid: str) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = reader.read(n - len(out))
        if not got:
            raise CorruptObjectError(oid, "compressed object is damaged (a group is shorter than announced)")
        out += got
    return bytes(out)


def decompress(container: bytes | memoryview, oid: str = "?", expected_size: int | None = None) -> bytes:
    """The raw bytes of a container. With ``expected_size``, the container must announce exactly that many
    (nothing is allocated for a size nobody expected)."""
    c = parse_container(container, oid)
    if expected_size is not None and c.raw_size != expected_size:
        raise CorruptObjectError(oid, f"compressed object announces {c.raw_size} bytes, not {expected_size}")
    out = bytearray()
    for block in iter_decompress(container, oid):
        out += block
    return bytes(out)
