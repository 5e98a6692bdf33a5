"""Lossless compression of stored blobs, modelled on ZipNN: group the bytes of each number by position, then
zstd each group. In bf16/fp16 the high byte (sign + exponent) of trained weights takes few values and
compresses well; the low byte (mantissa) is close to random and is stored as it is when zstd cannot shrink it.

A compressed object lives at ``objects/ab/cdef….z`` and its id is still the hash of the *uncompressed*
bytes. Commits write raw objects (fast); ``adaptvc gc --aggressive`` compresses them where it pays.

Container: ``b"AVZ1"``, one byte of codec (1 plain; 2, 4, 8: bytes grouped by position; 66: bf16 exponent /
sign+mantissa split), the 8-byte raw length, one byte of group count, then each group: one byte of encoding
(0 raw, 1 zstd) + 8-byte length + bytes.
"""

from __future__ import annotations

import struct

from .errors import CorruptObjectError

MAGIC = b"AVZ1"
#: keep a compressed copy only when it is at most this fraction of the raw bytes
WORTHWHILE = 0.92
ELEMENT_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8}
BF16_CODEC = 66
LEVEL = 1  # for byte planes of weights, level 1 compresses as well as 9 (its entropy coder does the work), fastest


def _zstd():
    import zstandard

    return zstandard


def _split(data: bytes, dtype: str | None) -> tuple[int, list[bytes]]:
    """(codec, byte groups). Codec 1: plain; 2: bf16 as exponent byte + sign/mantissa byte (the exponent
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


def _join(codec: int, groups: list[bytes], n: int) -> bytes:
    import numpy as np

    if codec == 1:
        return groups[0]
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


def raw_size(container: bytes) -> int:
    if container[:4] != MAGIC or len(container) < 13:
        raise CorruptObjectError("?", "not a compressed object")
    return struct.unpack_from("<Q", container, 5)[0]


def decompress(container: bytes, oid: str = "?") -> bytes:
    try:
        if container[:4] != MAGIC:
            raise ValueError("bad magic")
        codec, n = struct.unpack_from("<BQ", container, 4)
        (count,) = struct.unpack_from("<B", container, 13)
        pos = 14
        dctx = _zstd().ZstdDecompressor()
        groups = []
        for _ in range(count):
            enc, length = struct.unpack_from("<BQ", container, pos)
            pos += 9
            chunk = container[pos:pos + length]
            if len(chunk) != length:
                raise ValueError("truncated")
            pos += length
            groups.append(dctx.decompress(chunk, max_output_size=n) if enc == 1 else chunk)
        data = _join(codec, groups, n)
        if len(data) != n:
            raise ValueError("wrong length")
        return data
    except (ValueError, KeyError, struct.error, _zstd().ZstdError) as e:
        raise CorruptObjectError(oid, f"compressed object is damaged ({e})") from None
