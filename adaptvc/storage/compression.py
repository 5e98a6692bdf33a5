"""Lossless compression of stored blobs (``adaptvc gc --aggressive``): split the bits of each number into byte
planes where they are predictable and where they are not, zstd each plane; optionally code a tensor as the
difference from the same tensor in the parent version (a training run moves each weight by a few ulps between
checkpoints). An object's id is still the hash of its *uncompressed* bytes; commits write raw objects (fast).

Container 2 (written): ``b"AVZ2"``, u8 transform, u64 raw length, u8 delta, u8 group count, 16 bytes of base
object id (zero without delta), u8 length of the transform's parameters, the parameters, then each group:
u8 encoding (0 raw, 1 zstd), u64 stored length, u64 decoded length, the bytes. Integers little-endian.

- transform 1: the bytes as they are; 2, 4, 8: the bytes of each element grouped by position.
- transform 66 (bf16, f16): bits 14..7 (exponent; for f16 the exponent and 3 mantissa bits) / sign and bits 6..0.
- transform 16 (bf16): the parameters are a table of 15 exponents (the encoder takes the 15 consecutive ones
  that hold most numbers); plane 0 holds, for each number, its exponent's place in the table << 4 | its top 4
  mantissa bits (place 15: an exponent outside the table, kept in plane 2, in order), plane 1 its sign and 3
  low mantissa bits, two numbers a byte. All the predictable bits of a number share one byte, so zstd's
  entropy coder sees them together; the rest is near random and stored as it is.
- transform 68 (f32): exponent / sign and mantissa bits 22..16 / bits 15..8 / bits 7..0.
- delta 1 (with transform 2 or 4): the elements are first replaced by their difference from the base object's
  elements, taken on the sign-magnitude order of floating point (a step of one ulp is a difference of one,
  across zero too) and zigzagged (small differences of either sign are small numbers).

Container 1 (``b"AVZ1"``, read only): u8 codec (1 plain; 2, 4, 8 byte groups; 66 as above), u64 raw length, u8
group count, then each group: u8 encoding + u64 length + bytes.

A container is hostile input (it may come from a remote): its header is checked against its own size, it is
decoded as a stream in bounded blocks, and no group may produce a byte more than the header announced — a
container declaring 2⁶² bytes, or 45 KB that inflate to 1.5 GB, costs a few megabytes and one error. A delta
names its base; :func:`iter_chain` resolves bases through the store, at most :data:`MAX_CHAIN` deep (a loop is
refused by name), checking each base against its id as it streams.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from ..safetensors_format import DTYPES

MAGIC = b"AVZ1"
MAGIC2 = b"AVZ2"
#: the containers this code reads
MAGICS = (MAGIC, MAGIC2)
#: keep a compressed copy only when it is at most this fraction of the raw bytes
WORTHWHILE = 0.92
#: dtypes whose bytes are grouped by position: floating point of 2, 4 or 8 bytes
ELEMENT_SIZE = {name: d.bits // 8 for name, d in DTYPES.items() if d.floating and d.bits in (16, 32, 64)}
BF16_CODEC = 66
CODECS = {1: 1, 2: 2, 4: 4, 8: 8, BF16_CODEC: 2}  # container 1: codec -> number of groups
#: no object is larger than this (1 TiB): a bigger declared size is damage, not data
MAX_RAW_SIZE = 1 << 40
#: zstd may not ask for a larger back-reference window than this when decoding (our encoder uses 128 KB)
MAX_WINDOW = 1 << 25
#: output block of the streaming decoder, in elements (even: transform 16 packs two elements a byte)
BLOCK_ELEMENTS = 1 << 20

PLAIN, BF16_SYMBOLS, SPLIT7, F32_SPLIT = 1, 16, 66, 68
NO_DELTA, DIFFERENCE = 0, 1
#: a delta's base may itself be a delta, at most this many links deep (decoding an object decodes its chain)
MAX_CHAIN = 4
HEADER2 = struct.Struct("<4sBQBB16sB")
GROUP2 = struct.Struct("<BQQ")
ESCAPE = 15
#: a bf16 tensor up to this size is also tried with transform 66 (transform 16 pays from a few thousand numbers)
SMALL = 1 << 16
#: transform -> (element size, number of groups, length of its parameters)
TRANSFORMS = {PLAIN: (1, 1, 0), 2: (2, 2, 0), 4: (4, 4, 0), 8: (8, 8, 0), SPLIT7: (2, 2, 0), BF16_SYMBOLS: (2, 3, 15),
              F32_SPLIT: (4, 4, 0)}
#: the transform a dtype is compressed with on its own (a difference is stored as byte planes)
_OWN = {"BF16": BF16_SYMBOLS, "F16": SPLIT7, "F32": F32_SPLIT}
_UINT = {2: "<u2", 4: "<u4", 8: "<u8"}
_SINT = {2: "<i2", 4: "<i4"}


class DeltaChainError(CorruptObjectError):
    """A delta that cannot be decoded because of its chain, not its own bytes: its base is missing, of another
    size, or its chain loops or is too deep. (A store does not mark the delta's own copy corrupt for this.)"""


class DeltaBaseMismatchError(DeltaChainError, ChecksumMismatchError):
    """A delta's base whose bytes do not hash to its id (the base's copy is damaged, not the delta's)."""

    def __init__(self, base: str, oid: str, got: str) -> None:
        ChecksumMismatchError.__init__(self, f"object {base} (the delta base of {oid})", base, got)
        self.oid, self.reason = oid, f"its delta base {base} is corrupt"


def _zstd():
    import zstandard

    return zstandard


def _compressor():
    """zstd for byte planes: a small window, a tiny hash table and long minimum matches, so that the chance
    repeats of a low-entropy plane are left to the entropy coder (whole points smaller than level 1, faster)."""
    zstd = _zstd()
    return zstd.ZstdCompressor(compression_params=zstd.ZstdCompressionParameters(
        window_log=17, hash_log=6, chain_log=6, search_log=1, min_match=7, target_length=0,
        strategy=zstd.STRATEGY_FAST))


# -- transforms ----------------------------------------------------------------------------------------------
def _encode(transform: int, data: bytes | memoryview) -> tuple[bytes, list[bytes]]:
    """(parameters, groups) of ``data`` under ``transform``."""
    import numpy as np

    if transform == PLAIN:
        return b"", [bytes(data)]
    if transform in (2, 4, 8):
        planes = np.frombuffer(data, dtype=np.uint8).reshape(-1, transform).T
        return b"", [planes[i].tobytes() for i in range(transform)]
    if transform == SPLIT7:
        v = np.frombuffer(data, dtype="<u2")
        return b"", [((v >> 7) & 0xFF).astype(np.uint8).tobytes(),
                     (((v >> 8) & 0x80) | (v & 0x7F)).astype(np.uint8).tobytes()]
    if transform == F32_SPLIT:
        w = np.frombuffer(data, dtype="<u4")
        return b"", [((w >> 23) & 0xFF).astype(np.uint8).tobytes(),
                     (((w >> 24) & 0x80) | ((w >> 16) & 0x7F)).astype(np.uint8).tobytes(),
                     ((w >> 8) & 0xFF).astype(np.uint8).tobytes(), (w & 0xFF).astype(np.uint8).tobytes()]
    if transform == BF16_SYMBOLS:
        v = np.frombuffer(data, dtype="<u2")
        low_byte, high_byte = np.frombuffer(data, dtype=np.uint8)[0::2], np.frombuffer(data, dtype=np.uint8)[1::2]
        exponent = ((v >> 7) & 0xFF).astype(np.uint8)
        # the table: the 15 consecutive exponents holding most numbers (a sample is enough to choose them)
        counts = np.bincount(exponent[:: max(1, len(exponent) >> 20)], minlength=256)
        first = int(np.argmax(np.convolve(counts, np.ones(ESCAPE, dtype=np.int64), mode="valid")))
        table = np.arange(first, first + ESCAPE, dtype=np.uint8)
        r = exponent - np.uint8(first)  # (wraps below the table: escaped too)
        escaped = r >= ESCAPE
        np.minimum(r, ESCAPE, out=r)
        symbols = (r << 4) | ((low_byte >> 3) & 0xF)
        low = ((high_byte >> 4) & 0x8) | (low_byte & 0x7)
        if len(low) % 2:
            low = np.append(low, np.uint8(0))
        return table.tobytes(), [symbols.tobytes(), ((low[0::2] << 4) | low[1::2]).tobytes(),
                                 exponent[escaped].tobytes()]
    raise ValueError(f"unknown transform {transform}")


def _need(transform: int, group: int, count: int, pieces: list[bytes]) -> int:
    """How many decoded bytes of ``group`` the next block of ``count`` elements takes."""
    if transform == BF16_SYMBOLS and group == 1:
        return (count + 1) // 2
    if transform == BF16_SYMBOLS and group == 2:  # one escaped exponent for each symbol of rank 15
        import numpy as np

        return int(np.count_nonzero(np.frombuffer(pieces[0], dtype=np.uint8) >= ESCAPE << 4))
    return count


def _decode(transform: int, params: bytes, pieces: list[bytes], count: int, out=None):  # -> numpy array
    """The elements of one block (a numpy array of the transform's element width) from their groups, written
    into ``out`` (such an array) when given."""
    import numpy as np

    if transform == PLAIN:  # (a copy: never a view of the container, which may be a mapping of a pack)
        if out is None:
            return np.frombuffer(pieces[0], dtype=np.uint8).copy()
        out[:] = np.frombuffer(pieces[0], dtype=np.uint8)
        return out
    if transform in (2, 4, 8):
        planes = np.empty((count, transform), dtype=np.uint8) if out is None else out.view(np.uint8).reshape(-1,
                                                                                                          transform)
        for i, g in enumerate(pieces):
            planes[:, i] = np.frombuffer(g, dtype=np.uint8)
        return planes.reshape(-1).view(_UINT[transform])
    if transform == SPLIT7:  # exponent << 7 | sign << 15 | mantissa
        hi = np.frombuffer(pieces[0], dtype=np.uint8)
        lo = np.frombuffer(pieces[1], dtype=np.uint8)
        out = np.left_shift(hi, 7, dtype=np.uint16, out=out)
        out |= np.left_shift(lo & 0x80, 8, dtype=np.uint16)
        out |= lo & 0x7F
        return out
    if transform == F32_SPLIT:
        p = [np.frombuffer(g, dtype=np.uint8) for g in pieces]
        out = np.left_shift(p[0], 23, dtype=np.uint32, out=out)
        out |= np.left_shift(p[1] & 0x80, 24, dtype=np.uint32)
        out |= np.left_shift(p[1] & 0x7F, 16, dtype=np.uint32)
        out |= np.left_shift(p[2], 8, dtype=np.uint32)
        out |= p[3]
        return out
    # BF16_SYMBOLS: the symbol's bits, the escapes, then a lookup for every two bytes of low nibbles
    symbols = np.frombuffer(pieces[0], dtype=np.uint8)
    first = params[0]
    if first <= 0xFF - (ESCAPE - 1) and params == bytes(range(first, first + ESCAPE)):  # (as our encoder writes)
        out = np.left_shift(symbols, 3, dtype=np.uint16, out=out)  # place << 7 | mantissa << 3, + first
        out += np.uint16(first << 7)  # exponent << 7: the exponent (place 15 is mended below)
    else:
        table = np.frombuffer(params + b"\0", dtype=np.uint8).astype(np.uint16)
        every = np.arange(256, dtype=np.uint16)
        out = np.take((table[every >> 4] << 7) | ((every & 0xF) << 3), symbols, out=out)
    if len(pieces[2]):  # one escaped exponent for each symbol of place 15 (so many were read)
        escaped = np.flatnonzero(symbols >= ESCAPE << 4)
        out[escaped] &= 0x7F
        out[escaped] |= np.frombuffer(pieces[2], dtype=np.uint8).astype(np.uint16) << 7
    packed = np.frombuffer(pieces[1], dtype=np.uint8)
    if len(packed) % 2:
        packed = np.append(packed, np.uint8(0))
    out |= _LOW_QUADS()[packed.view("<u2")].view("<u2")[:count]
    return out


def _cached(build):
    value = []

    def get():
        if not value:
            value.append(build())
        return value[0]

    return get


@_cached
def _LOW_QUADS():
    """Each two bytes of nibbles -> the sign and low mantissa bits of four little-endian bf16 numbers (512 KB)."""
    import numpy as np

    every = np.arange(1 << 16, dtype=np.uint64)

    def bits(nibble):
        return ((nibble & 0x8) << 12) | (nibble & 0x7)

    nibbles = (every >> 4 & 0xF, every & 0xF, every >> 12 & 0xF, every >> 8 & 0xF)  # (little-endian bytes)
    return (bits(nibbles[0]) | bits(nibbles[1]) << 16 | bits(nibbles[2]) << 32 | bits(nibbles[3]) << 48)


def _ordered(words, k: int):
    """Sign-magnitude floating-point bits -> unsigned integers in the order of the numbers they stand for."""
    import numpy as np

    top = np.array(1 << (8 * k - 1), dtype=_UINT[k])
    return words ^ ((np.array(0, dtype=_UINT[k]) - (words >> (8 * k - 1))) | top)


def _unordered(ordered, k: int):
    import numpy as np

    top = np.array(1 << (8 * k - 1), dtype=_UINT[k])
    positive = ordered >> (8 * k - 1)  # 1 for a number of positive sign
    return ordered ^ (((positive ^ 1) * np.array((1 << (8 * k - 1)) - 1, dtype=_UINT[k])) | top)


def _difference(data: bytes | memoryview, base: bytes | memoryview, k: int) -> bytes:
    """The zigzagged order difference of each element of ``data`` from the same element of ``base``."""
    import numpy as np

    d = (_ordered(np.frombuffer(data, dtype=_UINT[k]), k) - _ordered(np.frombuffer(base, dtype=_UINT[k]), k))
    s = d.view(_SINT[k])
    return ((s << 1) ^ (s >> (8 * k - 1))).view(_UINT[k]).tobytes()


def _undifference(zigzag, base: bytes, k: int):
    import numpy as np

    d = (zigzag >> 1) ^ (np.array(0, dtype=_UINT[k]) - (zigzag & 1))
    return _unordered(_ordered(np.frombuffer(base, dtype=_UINT[k]), k) + d, k)


# -- writing -------------------------------------------------------------------------------------------------
def _container(transform: int, raw_size: int, params: bytes, groups: list[bytes], base_id: str | None) -> bytes:
    zstd = _compressor()
    parts = [HEADER2.pack(MAGIC2, transform, raw_size, DIFFERENCE if base_id else NO_DELTA, len(groups),
                          bytes.fromhex(base_id) if base_id else bytes(16), len(params)), params]
    for g in groups:
        packed = zstd.compress(g) if g else b""
        if len(packed) < 0.98 * len(g):
            parts += [GROUP2.pack(1, len(packed), len(g)), packed]
        else:
            parts += [GROUP2.pack(0, len(g), len(g)), g]
    return b"".join(parts)


def compress(data: bytes | memoryview, dtype: str | None = None, base: bytes | memoryview | None = None,
             base_id: str | None = None, worthwhile: float = WORTHWHILE) -> bytes | None:
    """The container for ``data`` (the values of a tensor of ``dtype``, or any bytes), or None when compression
    does not pay (the container is more than ``worthwhile`` times the raw size). With ``base`` (the raw bytes of
    object ``base_id``: the same tensor in the parent version, of the same dtype and size), the difference from it
    is tried too and the smaller container is kept."""
    k = ELEMENT_SIZE.get(dtype or "", 1)
    transform = PLAIN if k == 1 or len(data) % k else _OWN.get(dtype or "", k)
    best = _container(transform, len(data), *_encode(transform, data), None)
    if transform == BF16_SYMBOLS and len(data) <= SMALL:  # zstd may find too few symbols to build a table for
        split = _container(SPLIT7, len(data), *_encode(SPLIT7, data), None)
        best = split if len(split) < len(best) else best
    if base is not None and base_id is not None and k in _SINT and len(base) == len(data) and len(data):
        delta = _container(k, len(data), *_encode(k, _difference(data, base, k)), base_id)
        if len(delta) < len(best):
            best = delta
    return None if len(best) > worthwhile * len(data) else best  # (inf: always a container, even of nothing)


# -- reading -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Container:
    codec: int  # the transform
    raw_size: int
    groups: tuple[tuple[int, int, int, int], ...]  # (encoding, offset, stored length, decoded length) of each
    version: int = 1
    delta: int = NO_DELTA
    base: str | None = None  # the id of the object a delta is taken against
    params: bytes = b""

    @property
    def elements(self) -> int:
        return self.raw_size // (CODECS[self.codec] if self.version == 1 else TRANSFORMS[self.codec][0])


def parse_container(container: bytes | memoryview, oid: str = "?") -> Container:
    """Check a container's header against its own length; CorruptObjectError when it does not add up."""
    view = memoryview(container)
    try:
        magic = bytes(view[:4])
        if magic == MAGIC:
            return _parse1(view)
        if magic == MAGIC2:
            return _parse2(view)
        raise ValueError("bad magic")
    except (ValueError, struct.error) as e:
        raise CorruptObjectError(oid, f"compressed object is damaged ({e})") from None


def _parse1(view: memoryview) -> Container:
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
        groups.append((enc, pos, length, n // count))
        pos += length
    if pos != len(view):
        raise ValueError("trailing bytes")
    return Container(codec, n, tuple(groups))


def _parse2(view: memoryview) -> Container:
    _, transform, n, delta, count, base, params_len = HEADER2.unpack_from(view, 0)
    if transform not in TRANSFORMS or count != TRANSFORMS[transform][1] or params_len != TRANSFORMS[transform][2]:
        raise ValueError(f"unknown transform {transform} with {count} groups")
    k = TRANSFORMS[transform][0]
    if n > MAX_RAW_SIZE or n % k:
        raise ValueError(f"declares {n} bytes")
    if delta not in (NO_DELTA, DIFFERENCE) or (delta == DIFFERENCE) != any(base):
        raise ValueError("a delta without a base, or a base without a delta")
    if delta == DIFFERENCE and transform not in _SINT:  # a difference is stored as byte planes
        raise ValueError(f"a delta of transform {transform}")
    pos = HEADER2.size + params_len
    if pos > len(view):
        raise ValueError("truncated")
    elements, groups = n // k, []
    for i in range(count):
        enc, length, decoded = GROUP2.unpack_from(view, pos)
        pos += GROUP2.size
        if transform == BF16_SYMBOLS and i == 1:
            expected = (elements + 1) // 2
        elif transform == BF16_SYMBOLS and i == 2:  # escaped exponents: at most one per element
            expected = decoded if decoded <= elements else -1
        else:
            expected = elements
        if enc not in (0, 1) or pos + length > len(view):
            raise ValueError("truncated or unknown group")
        if decoded != expected or (enc == 0 and length != decoded):
            raise ValueError(f"group {i} declares {decoded} bytes")
        groups.append((enc, pos, length, decoded))
        pos += length
    if pos != len(view):
        raise ValueError("trailing bytes")
    return Container(transform, n, tuple(groups), 2, delta, base.hex() if delta else None,
                     bytes(view[HEADER2.size:HEADER2.size + params_len]))


def raw_size(container: bytes | memoryview, oid: str = "?") -> int:
    return parse_container(container, oid).raw_size


def base_of(container: bytes | memoryview, oid: str = "?") -> str | None:
    """The id of the object a container is a delta against (None: it stands on its own)."""
    return parse_container(container, oid).base


def base_in_header(head: bytes | memoryview) -> str | None:
    """The base a container names, from its first :data:`HEADER2` bytes alone (None: no delta, or not a
    container of version 2). Not a check of the container: what gc keeps so a delta stays decodable."""
    if len(head) < HEADER2.size or bytes(head[:4]) != MAGIC2:
        return None
    _, _, _, delta, _, base, _ = HEADER2.unpack_from(head, 0)
    return base.hex() if delta == DIFFERENCE and any(base) else None


class _Group:
    """One group of a container, read in exact amounts: never more than it announced, never less."""

    def __init__(self, part: memoryview, enc: int, decoded: int, oid: str) -> None:
        self.oid, self.decoded, self.done = oid, decoded, 0
        self.view = part if enc == 0 else None
        self.reader = None
        if enc == 1:
            dctx = _zstd().ZstdDecompressor(max_window_size=MAX_WINDOW)
            self.reader = dctx.stream_reader(part, read_across_frames=True)

    def read(self, n: int) -> bytes | bytearray | memoryview:
        if self.done + n > self.decoded:
            raise CorruptObjectError(self.oid, "compressed object is damaged (a group is shorter than announced)")
        if self.view is not None:
            out: bytes | bytearray | memoryview = self.view[self.done:self.done + n]
        else:
            out = _read_exactly(self.reader, n, self.oid)
        self.done += n
        return out

    def finish(self) -> None:
        if self.done != self.decoded:
            raise CorruptObjectError(self.oid, "compressed object is damaged (a group is longer than announced)")
        if self.reader is not None and self.reader.read(1):
            raise CorruptObjectError(self.oid, "compressed object is damaged (a group is longer than announced)")

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


class _Exactly:
    """The raw bytes of a delta's base, in the amounts the decoder asks for, from chunks of any size."""

    def __init__(self, chunks: Iterable[bytes | memoryview], oid: str, base: str) -> None:
        self.it, self.oid, self.base = iter(chunks), oid, base
        self.pending = bytearray()

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = next(self.it, None)
            if chunk is None:
                raise DeltaChainError(self.oid, f"its delta base {self.base} is shorter than the object")
            self.pending += chunk
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def finish(self) -> None:
        if self.pending or any(len(chunk) for chunk in self.it):  # (read to its end: its hash is checked there)
            raise DeltaChainError(self.oid, f"its delta base {self.base} is longer than the object")


def iter_decompress(container: bytes | memoryview, oid: str = "?", base: Iterable[bytes | memoryview] | None = None,
                    into: bytearray | None = None) -> Iterator[bytes | memoryview]:
    """The raw bytes of a container, in blocks of at most a few megabytes (bytes-like); CorruptObjectError as
    soon as a group holds more or fewer bytes than the header announced. A delta needs ``base``: the raw bytes
    of the object it names (:attr:`Container.base`), in chunks of any size (:func:`iter_chain` finds them).
    With ``into`` (a buffer of exactly the raw size), the blocks are decoded in place there (no copies)."""
    import numpy as np

    zstd = _zstd()
    view = memoryview(container)
    c = parse_container(view, oid)
    if c.base is not None and base is None:
        raise DeltaChainError(oid, f"it is stored as a delta against {c.base}, which this reader cannot reach")
    k = TRANSFORMS[c.codec][0] if c.version == 2 else CODECS[c.codec]
    if into is not None and len(into) != c.raw_size:
        raise ValueError(f"a buffer of {len(into)} bytes for {c.raw_size}")
    target = np.frombuffer(into, dtype=_UINT.get(k, np.uint8)) if into is not None else None
    source = _Exactly(base, oid, c.base) if c.base is not None and base is not None else None
    groups: list[_Group] = []
    try:
        for enc, off, length, decoded in c.groups:
            groups.append(_Group(view[off:off + length], enc, decoded, oid))
        done, elements = 0, c.elements
        while done < elements:
            count = min(BLOCK_ELEMENTS, elements - done)
            pieces: list[bytes] = []
            for i, g in enumerate(groups):
                pieces.append(g.read(_need(c.codec, i, count, pieces) if c.version == 2 else count))
            dst = target[done:done + count] if target is not None else None
            done += count
            if c.version == 1:
                block = _join(c.codec, pieces, count * k)
                if dst is None:
                    yield block
                    continue
                dst[:] = np.frombuffer(block, dtype=dst.dtype)
                yield memoryview(dst).cast("B")
                continue
            words = _decode(c.codec, c.params, pieces, count, dst)
            if source is not None:
                words = _undifference(words, source.read(count * k), k)
                if dst is not None:
                    dst[:] = words
                    words = dst
            yield memoryview(words).cast("B")
        for g in groups:
            g.finish()
        if source is not None:
            source.finish()
    except zstd.ZstdError as e:
        raise CorruptObjectError(oid, f"compressed object is damaged ({e})") from None
    finally:
        for g in groups:
            g.close()


def _join(codec: int, groups: list[bytes], n: int) -> bytes:
    """Container 1: the raw bytes of ``n`` bytes' worth of elements, from their byte groups."""
    import numpy as np

    if codec == 1:
        return bytes(groups[0])
    if codec == BF16_CODEC:
        return _decode(SPLIT7, b"", groups, n // 2).astype("<u2", copy=False).tobytes()
    width = {2: "<u2", 4: "<u4", 8: "<u8"}[codec]
    out = np.zeros(n // codec, dtype=width)
    for i, g in enumerate(groups):  # byte i of each little-endian element
        out |= np.frombuffer(g, dtype=np.uint8).astype(width) << (8 * i)
    return out.tobytes()


def _read_exactly(reader, n: int, oid: str) -> bytearray:
    out = bytearray(n)
    view, done = memoryview(out), 0
    while done < n:
        got = reader.readinto(view[done:])
        if not got:
            raise CorruptObjectError(oid, "compressed object is damaged (a group is shorter than announced)")
        done += got
    return out


def iter_chain(oid: str, container: bytes | memoryview,
               stored_container: Callable[[str], bytes | memoryview | None],
               raw_chunks: Callable[[str], Iterable[bytes | memoryview]],
               max_depth: int = MAX_CHAIN, into: bytearray | None = None) -> Iterator[bytes | memoryview]:
    """The raw bytes of object ``oid`` stored as ``container``, resolving its delta chain through the store:
    ``stored_container(id)`` is another object's container (None when it is stored raw; ObjectNotFoundError
    when the store does not have it) and ``raw_chunks(id)`` the bytes of an object stored raw. A chain longer
    than ``max_depth`` deltas, or one that comes back to an object already on it, is refused; every base is
    checked against its id as it streams. ``into``: as for :func:`iter_decompress` (the object's own blocks)."""
    return _resolve(oid, container, stored_container, raw_chunks, max_depth, (oid,), into)


def _resolve(oid: str, container: bytes | memoryview, stored_container, raw_chunks, left: int,
             chain: tuple[str, ...], into: bytearray | None = None) -> Iterator[bytes | memoryview]:
    base = parse_container(container, oid).base
    if base is None:
        yield from iter_decompress(container, oid, into=into)
        return
    if base in chain:
        raise DeltaChainError(chain[0], f"its delta chain loops ({' -> '.join((*chain, base))})")
    if left <= 0:
        raise DeltaChainError(chain[0], f"its delta chain is longer than {len(chain) - 1}")
    try:
        base_container = stored_container(base)
    except ObjectNotFoundError:
        raise DeltaChainError(oid, f"its delta base {base} is missing") from None
    chunks = raw_chunks(base) if base_container is None else \
        _resolve(base, base_container, stored_container, raw_chunks, left - 1, (*chain, base))
    yield from iter_decompress(container, oid, _verified(chunks, base, oid), into)


def decode_object(oid: str, container: bytes | memoryview,
                  stored_container: Callable[[str], bytes | memoryview | None],
                  raw_chunks: Callable[[str], Iterable[bytes | memoryview]], expected_size: int) -> bytes | bytearray:
    """The raw bytes of object ``oid`` (:func:`iter_chain`), which must be ``expected_size`` bytes long."""
    c = parse_container(container, oid)
    if c.raw_size != expected_size:
        raise CorruptObjectError(oid, f"compressed object announces {c.raw_size} bytes, not {expected_size}")
    if c.base is None:
        return decompress(container, oid, expected_size)
    out = bytearray(expected_size)
    for _ in iter_chain(oid, container, stored_container, raw_chunks, into=out):
        pass
    return out


def _verified(chunks: Iterable[bytes | memoryview], base: str, oid: str) -> Iterator[bytes | memoryview]:
    from ..hashing import new_hasher

    h = new_hasher()
    for chunk in chunks:
        h.update(chunk)
        yield chunk
    if h.hexdigest() != base:
        raise DeltaBaseMismatchError(base, oid, h.hexdigest())


def decompress(container: bytes | memoryview, oid: str = "?", expected_size: int | None = None,
               base: Iterable[bytes | memoryview] | None = None) -> bytes | bytearray:
    """The raw bytes of a container. With ``expected_size``, the container must announce exactly that many
    (nothing is allocated for a size nobody expected), and they are decoded in place into one buffer."""
    c = parse_container(container, oid)
    if expected_size is None:
        return b"".join(list(iter_decompress(container, oid, base)))
    if c.raw_size != expected_size:
        raise CorruptObjectError(oid, f"compressed object announces {c.raw_size} bytes, not {expected_size}")
    out = bytearray(expected_size)
    for _ in iter_decompress(container, oid, base, into=out):
        pass
    return out
