"""Compressed containers, version 2 (``gc --aggressive``): exact round trips, deltas against a parent version's
tensor and their chains, containers of version 1 still read, and hostile containers refused in one line with
bounded memory."""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptvc.errors import AdaptvcError, ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from adaptvc.hashing import hash_bytes
from adaptvc.storage import compression as avz
from adaptvc.storage.compression import (
    GROUP2,
    HEADER2,
    MAGIC2,
    MAX_CHAIN,
    base_of,
    compress,
    decode_object,
    decompress,
    iter_chain,
    parse_container,
)
from tests.light import zstd_bomb

ALWAYS = float("inf")  # keep the container whatever its size


def bf16(n: int, seed: int = 0, scale: float = 0.02) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n, dtype=np.float32) * np.float32(scale)
    return (x.view(np.uint32) >> 16).astype("<u2")


def steps(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` after a training step: most numbers move by a few ulps, across zero too."""
    rng = np.random.default_rng(seed)
    moved = x.astype(np.int32) + np.where(x & 0x8000, -1, 1) * rng.integers(-3, 4, x.size)
    moved[::97] = 0x8001  # tiny negative numbers, and
    moved[1::97] = 0x0000  # zeros: neighbours across the sign
    return (moved & 0xFFFF).astype("<u2")


MAKERS = {
    "BF16": lambda n: bf16(n).tobytes(),
    "F16": lambda n: (np.random.default_rng(1).standard_normal(n) * 0.02).astype("<f2").tobytes(),
    "F32": lambda n: (np.random.default_rng(2).standard_normal(n) * 0.02).astype("<f4").tobytes(),
    "F64": lambda n: np.linspace(-1, 1, n).astype("<f8").tobytes(),
    None: lambda n: (b"adapter_config " * (n // 15 + 1))[:n],
}


class Objects:
    """A store in a dict, as DiskObjectStore resolves chains: id -> container (None: stored raw), raw bytes."""

    def __init__(self) -> None:
        self.containers: dict[str, bytes | None] = {}
        self.raw: dict[str, bytes] = {}

    def put(self, data: bytes, container: bytes | None = None) -> str:
        oid = hash_bytes(data)
        self.containers[oid] = container
        if container is None:
            self.raw[oid] = data
        return oid

    def container(self, oid: str) -> bytes | None:
        if oid not in self.containers:
            raise ObjectNotFoundError(oid)
        return self.containers[oid]

    def chunks(self, oid: str):
        data = self.raw[oid]
        return (data[i:i + 1000] for i in range(0, len(data), 1000))  # any chunking will do

    def read(self, oid: str) -> bytes:
        c = self.containers[oid]
        return self.raw[oid] if c is None else b"".join(iter_chain(oid, c, self.container, self.chunks))


# -- round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", list(MAKERS))
@pytest.mark.parametrize("n", [0, 1, 3, 1001, avz.BLOCK_ELEMENTS + 3])
def test_round_trip_is_exact(dtype, n):
    data = MAKERS[dtype](n)
    container = compress(data, dtype, worthwhile=ALWAYS)
    assert container[:4] == MAGIC2
    assert decompress(container, "x", len(data)) == data
    assert b"".join(avz.iter_decompress(container)) == data


def test_every_16_bit_pattern_survives_each_transform_and_the_difference():
    every = np.arange(1 << 16, dtype="<u2")
    shuffled = np.random.default_rng(0).permutation(every)
    for transform in (avz.BF16_SYMBOLS, avz.SPLIT7, 2):
        container = avz._container(transform, every.nbytes, *avz._encode(transform, shuffled.tobytes()), None)
        assert decompress(container) == shuffled.tobytes()
    base = every.tobytes()
    container = compress(shuffled.tobytes(), "BF16", base, hash_bytes(base), worthwhile=ALWAYS)
    assert base_of(container) == hash_bytes(base)
    assert decompress(container, base=[base]) == shuffled.tobytes()


def test_numbers_far_outside_the_exponent_table_are_escaped_exactly():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000).astype(np.float32) * np.exp(rng.uniform(-40, 40, 50_000)).astype(np.float32)
    data = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    container = compress(data, "BF16", worthwhile=ALWAYS)
    c = parse_container(container)
    assert c.codec == avz.BF16_SYMBOLS and c.groups[2][3] > 1000  # many escapes
    assert decompress(container) == data


def test_bf16_weights_shrink_below_the_old_codec():
    data = bf16(1 << 20).tobytes()
    ratio = len(compress(data, "BF16")) / len(data)
    assert ratio < 0.665  # container 1 took 0.68 here; the entropy of these numbers is 0.654


def test_small_bf16_tensors_still_compress():
    data = np.tile(bf16(16, seed=5), 64).tobytes()
    assert len(compress(data, "BF16")) < 0.3 * len(data)


def test_incompressible_bytes_are_left_alone():
    assert compress(np.random.default_rng(0).bytes(100_000), None) is None
    assert compress(b"", "BF16") is None


def test_the_header_is_laid_out_as_documented():
    data = bf16(5000).tobytes()
    base = steps(bf16(5000), 1).tobytes()
    container = compress(data, "BF16", base, hash_bytes(base))
    magic, transform, n, delta, count, base_id, params = HEADER2.unpack_from(container)
    assert (magic, transform, n, delta, count, base_id, params) == (b"AVZ2", 2, 10_000, 1, 2,
                                                                    bytes.fromhex(hash_bytes(base)), 0)
    own = compress(data, "BF16")
    magic, transform, n, delta, count, base_id, params = HEADER2.unpack_from(own)
    assert (transform, delta, count, base_id, params) == (16, 0, 3, bytes(16), 15)
    table = own[HEADER2.size:HEADER2.size + 15]
    assert list(table) == list(range(table[0], table[0] + 15))  # 15 consecutive exponents
    pos, decoded_sizes = HEADER2.size + 15, []
    for _ in range(count):
        enc, stored, decoded = GROUP2.unpack_from(own, pos)
        assert enc in (0, 1)
        decoded_sizes.append(decoded)
        pos += GROUP2.size + stored
    assert pos == len(own)
    assert decoded_sizes[:2] == [5000, 2500] and decoded_sizes[2] < 50  # symbols, nibble pairs, escapes


def test_a_container_of_raw_groups_pins_the_transforms():
    # transform 16 by hand: exponents 120..134, number 0x3C80 (exponent 121, mantissa 0) and 0xBCFF
    # (sign, exponent 121, mantissa 0x7F), then 0x7F80 (exponent 255: escaped)
    symbols = bytes([1 << 4 | 0, 1 << 4 | 0xF, 15 << 4 | 0])
    nibbles = bytes([0x0F, 0x00])  # sign+low bits of the first two numbers, then of the third (and padding)
    parts = [HEADER2.pack(MAGIC2, 16, 6, 0, 3, bytes(16), 15), bytes(range(120, 135))]
    for g in (symbols, nibbles, b"\xff"):
        parts += [GROUP2.pack(0, len(g), len(g)), g]
    assert decompress(b"".join(parts)) == struct.pack("<3H", 0x3C80, 0xBCFF, 0x7F80)


# -- deltas and chains ---------------------------------------------------------------------------------------
def training_run(versions: int, n: int = 20_000) -> list[bytes]:
    x = bf16(n)
    out = [x.tobytes()]
    for i in range(1, versions):
        x = steps(x, i)
        out.append(x.tobytes())
    return out


def test_consecutive_checkpoints_are_stored_as_differences_a_chain_deep():
    objects = Objects()
    ids, depth = [], {}
    for data in training_run(MAX_CHAIN + 3):
        parent = ids[-1] if ids else None
        if parent is not None and depth[parent] >= MAX_CHAIN:
            parent = None
        base = objects.read(parent) if parent else None
        container = compress(data, "BF16", base, parent)
        oid = objects.put(data, container)
        depth[oid] = depth[parent] + 1 if parent and base_of(container) else 0
        ids.append(oid)
    assert max(depth.values()) == MAX_CHAIN and list(depth.values()).count(0) == 2
    for oid, data in zip(ids, training_run(MAX_CHAIN + 3), strict=True):
        assert objects.read(oid) == data
        assert decode_object(oid, objects.containers[oid], objects.container, objects.chunks, len(data)) == data
    sizes = [len(objects.containers[oid]) for oid in ids]
    assert max(sizes[1:MAX_CHAIN]) < 0.5 * sizes[0]  # a few ulps per step cost a few bits per number


def test_the_difference_is_kept_only_when_smaller():
    a, b = bf16(20_000, seed=1).tobytes(), bf16(20_000, seed=2).tobytes()  # unrelated tensors
    assert base_of(compress(b, "BF16", a, hash_bytes(a))) is None
    assert base_of(compress(b, "BF16", a[:-2], hash_bytes(a[:-2]))) is None  # another size: never a base


def delta(data: bytes, base: bytes, base_id: str | None = None) -> bytes:
    return compress(data, "BF16", base, base_id or hash_bytes(base), worthwhile=ALWAYS)


def test_a_missing_base_is_named():
    v0, v1 = training_run(2)
    objects = Objects()
    oid = objects.put(v1, delta(v1, v0))
    with pytest.raises(CorruptObjectError, match=f"its delta base {hash_bytes(v0)} is missing"):
        objects.read(oid)
    with pytest.raises(CorruptObjectError, match="which this reader cannot reach"):
        decompress(objects.containers[oid])


def test_a_base_that_is_not_the_object_it_names_is_refused():
    v0, v1, other = *training_run(2), bf16(20_000, seed=9).tobytes()
    objects = Objects()
    objects.put(v0)
    lying = delta(v1, v0, base_id=hash_bytes(other))  # names another object...
    objects.raw[hash_bytes(other)] = v0  # ...whose stored bytes are damaged (they are v0's)
    objects.containers[hash_bytes(other)] = None
    oid = objects.put(v1, lying)
    with pytest.raises(ChecksumMismatchError, match=f"the delta base of {oid}"):
        objects.read(oid)


def test_a_base_of_another_size_is_refused():
    v0, v1 = training_run(2)
    objects = Objects()
    short = v0[:-200]
    objects.put(short)
    oid = objects.put(v1, delta(v1, v0, base_id=hash_bytes(short)))
    with pytest.raises(CorruptObjectError, match="is shorter than the object"):
        objects.read(oid)
    longer = v0 + v0[:10]
    objects.put(longer)
    oid = objects.put(v1 + b"", delta(v1, v0, base_id=hash_bytes(longer)))
    with pytest.raises(CorruptObjectError, match="is longer than the object"):
        objects.read(oid)


def test_a_loop_is_refused_by_name():
    v0, v1 = training_run(2)
    a, b = hash_bytes(v0), hash_bytes(v1)
    objects = Objects()
    objects.containers[a] = delta(v0, v1, base_id=b)
    objects.containers[b] = delta(v1, v0, base_id=a)
    with pytest.raises(CorruptObjectError, match=f"its delta chain loops \\({a} -> {b} -> {a}\\)"):
        objects.read(a)
    objects.containers[a] = delta(v0, v1, base_id=a)  # itself
    with pytest.raises(CorruptObjectError, match="loops"):
        objects.read(a)


def test_a_chain_deeper_than_the_limit_is_refused():
    versions = training_run(MAX_CHAIN + 2)
    objects = Objects()
    ids = [objects.put(versions[0])]
    for data in versions[1:]:
        ids.append(objects.put(data, delta(data, versions[len(ids) - 1], base_id=ids[-1])))
    assert objects.read(ids[MAX_CHAIN]) == versions[MAX_CHAIN]
    with pytest.raises(CorruptObjectError, match=f"its delta chain is longer than {MAX_CHAIN}"):
        objects.read(ids[MAX_CHAIN + 1])


def test_decoding_a_chain_takes_bounded_memory():
    n = 4 << 20  # 8 MB a version
    x = bf16(n)
    versions = [x.tobytes()]
    for i in range(MAX_CHAIN):
        x = steps(x, i)
        versions.append(x.tobytes())
    objects = Objects()
    ids = [objects.put(versions[0], compress(versions[0], "BF16"))]
    for data in versions[1:]:
        ids.append(objects.put(data, delta(data, versions[len(ids) - 1], base_id=ids[-1])))
    tracemalloc.start()
    try:
        total = 0
        for block in iter_chain(ids[-1], objects.containers[ids[-1]], objects.container, objects.chunks):
            total += len(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 2 * n
    assert peak < 64 << 20, peak  # a few blocks a link, not versions


# -- containers of version 1 ---------------------------------------------------------------------------------
# written by the encoder of container 1 (before container 2 existed): they must read forever
OLD_BF16 = ("41565a314200080000000000000201210000000000000028b52ffd600003bd000080797a7578797879787a747878797877750100"
            "da4f359701210000000000000028b52ffd600003bd000080c8afa9e79b37178d53951545c184bae40100da4f3597")
OLD_BF16_PATTERN = "c8bc2fbda9ba67bc9bbc373c973c0dbc533d15ba153c453cc1bc04bcbabbe4ba"
OLD_F32 = ("41565a310480010000000000000401110000000000000028b52ffd206045000010000001003b012c01110000000000000028b52ffd"
           "206045000010000001003b012c01140000000000000028b52ffd20605d0000180000800200049210011601160000000000000028b5"
           "2ffd20606d0000203f3fbe3f0310008d3457c402")
OLD_PLAIN = ("41565a3101f00000000000000001011f0000000000000028b52ffd20f0b5000078616461707465725f636f6e6669672001005e"
             "a1661d")


def test_containers_of_version_1_are_still_read():
    assert decompress(bytes.fromhex(OLD_BF16), "x", 2048) == bytes.fromhex(OLD_BF16_PATTERN) * 64
    f32 = np.repeat(np.float32([0.5, -0.25, 1.0]), 32).astype("<f4").tobytes()
    assert decompress(bytes.fromhex(OLD_F32), "x", len(f32)) == f32
    assert decompress(bytes.fromhex(OLD_PLAIN)) == b"adapter_config " * 16
    assert base_of(bytes.fromhex(OLD_BF16)) is None
    objects = Objects()
    assert b"".join(iter_chain("x", bytes.fromhex(OLD_F32), objects.container, objects.chunks)) == f32


# -- hostile containers --------------------------------------------------------------------------------------
def header(transform=2, n=2048, delta_=0, count=2, base=bytes(16), params=b"") -> bytes:
    return HEADER2.pack(MAGIC2, transform, n, delta_, count, base, len(params)) + params


def group(data: bytes, enc: int = 0, decoded: int | None = None) -> bytes:
    return GROUP2.pack(enc, len(data), len(data) if decoded is None else decoded) + data


def refused(container: bytes, needle: str = "", **kw) -> str:
    with pytest.raises(CorruptObjectError) as e:
        decompress(container, "deadbeef", **kw)
    message = str(e.value)
    assert "\n" not in message and needle in message, message
    return message


def test_damaged_headers_are_refused():
    good = header() + group(bytes(1024)) + group(bytes(1024))
    assert decompress(good) == bytes(2048)
    refused(good[:20], "damaged")
    refused(good + b"x", "trailing bytes")
    refused(good[:-1], "truncated")
    refused(header(transform=99) + group(bytes(1024)) * 2, "unknown transform 99")
    refused(header(count=3) + group(bytes(1024)) * 3, "unknown transform 2 with 3 groups")
    refused(header(n=2047) + group(bytes(1024)) * 2, "declares 2047 bytes")
    refused(header(delta_=1) + group(bytes(1024)) * 2, "a delta without a base")
    refused(header(base=b"\x01" * 16) + group(bytes(1024)) * 2, "a base without a delta")
    refused(header(transform=16, count=3, params=bytes(15), delta_=1, base=b"\x01" * 16)
            + group(bytes(1024)) + group(bytes(512)) + group(b""), "a delta of transform 16")
    refused(header(transform=16, count=3, params=bytes(14)) + group(bytes(1024)), "unknown transform 16")


def test_declared_sizes_that_lie_are_refused():
    refused(header(n=1 << 62) + group(bytes(1024)) * 2, f"declares {1 << 62} bytes")
    refused(header() + group(bytes(1024)) + group(bytes(1024), decoded=4096), "group 1 declares 4096 bytes")
    refused(header() + group(bytes(1024), decoded=1025) + group(bytes(1024)), "group 0 declares")
    # escapes: more than one per number, or not as many as the symbols call for
    sym = header(transform=16, n=8, count=3, params=bytes(15))
    refused(sym + group(bytes(4)) + group(bytes(2)) + group(bytes(5)), "group 2 declares 5 bytes")
    refused(sym + group(bytes([0xF0] * 4)) + group(bytes(2)) + group(bytes(3)), "shorter than announced")
    refused(sym + group(bytes(4)) + group(bytes(2)) + group(bytes(1)), "longer than announced")
    z = zstandard.ZstdCompressor().compress(bytes(2000))  # a zstd group holding more than it says
    refused(header() + group(z, 1, 1024) + group(bytes(1024)), "longer than announced")
    z = zstandard.ZstdCompressor().compress(bytes(1000))  # ...or less
    refused(header() + group(z, 1, 1024) + group(bytes(1024)), "shorter than announced")
    c = compress(bf16(1000).tobytes(), "BF16")
    refused(c, "announces 2000 bytes, not 4000", expected_size=4000)


def test_a_decompression_bomb_is_stopped_in_bounded_memory():
    bomb = zstd_bomb(1500)  # 1.5 GB of zeros in a few tens of kilobytes
    container = header(n=2048) + group(bomb, 1, 1024) + group(bytes(1024))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(container, "longer than announced")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert time.perf_counter() - start < 5
    # the same bomb declaring its full size as one plane of a 3 GB tensor: nothing is allocated up front
    container = header(n=3_000_000_000) + group(bomb, 1, 1_500_000_000) + group(bytes(16), 1, 1_500_000_000)
    tracemalloc.start()
    try:
        refused(container, "compressed object is damaged")  # (its second plane is not zstd)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_containers_are_refused_in_one_line(blob):
    for magic in (b"AVZ1", b"AVZ2"):
        try:
            decompress(magic + blob)
        except CorruptObjectError as e:
            assert "\n" not in str(e)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_containers_never_fail_any_other_way(data):
    v0, v1 = training_run(2, n=3001)
    objects = Objects()
    objects.put(v0)
    good = bytearray(delta(v1, v0) if data.draw(st.booleans()) else compress(v1, "BF16", worthwhile=ALWAYS))
    for _ in range(data.draw(st.integers(1, 4))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    try:
        b"".join(iter_chain(hash_bytes(v1), bytes(good), objects.container, objects.chunks))
    except AdaptvcError as e:  # corrupt, or a base that is not what it should be; never a traceback
        assert "\n" not in str(e)


def test_a_delta_of_raw_groups_pins_the_documented_difference():
    """docs/format.md's rule, written independently: byte planes of zigzag(ord(x) - ord(b)) mod 2^16."""
    def order(w: int) -> int:
        return (~w & 0xFFFF) if w & 0x8000 else w ^ 0x8000

    def zigzag(s: int) -> int:
        return ((s << 1) ^ (s >> 15)) & 0xFFFF

    base = [0x3C80, 0x8001, 0x0000, 0xBCFF, 0x7F7F]  # 1.0 (bf16), -tiny, +0, a negative number, the largest
    x = [0x3C81, 0x0000, 0x8001, 0xBCFD, 0x7F7E]  # one ulp up, across zero both ways, two ulps, one down
    diffs = []
    for a, b in zip(x, base, strict=True):
        d = (order(a) - order(b)) & 0xFFFF
        diffs.append(zigzag(d - 0x10000 if d & 0x8000 else d))
    # one ulp up (+1), from -tiny through -0 to +0 (+2), from +0 through -0 to -tiny (-2), a negative number two
    # ulps towards zero (+2), one ulp down (-1): small differences, small numbers
    assert diffs == [2, 4, 3, 4, 1]
    planes = [bytes(d & 0xFF for d in diffs), bytes(d >> 8 for d in diffs)]
    base_bytes = struct.pack("<5H", *base)
    parts = [HEADER2.pack(MAGIC2, 2, 10, 1, 2, bytes.fromhex(hash_bytes(base_bytes)), 0)]
    for g in planes:
        parts += [GROUP2.pack(0, len(g), len(g)), g]
    assert decompress(b"".join(parts), base=[base_bytes]) == struct.pack("<5H", *x)
    assert decompress(compress(struct.pack("<5H", *x), "BF16", base_bytes, hash_bytes(base_bytes),
                               worthwhile=ALWAYS), base=[base_bytes]) == struct.pack("<5H", *x)
