"""Tensor bytes to float64 with numpy alone: bf16 is the top half of a float32, fp8 goes through a table."""

from __future__ import annotations

import numpy as np

_DIRECT = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}
_ITEMSIZE = {**{k: v.itemsize for k, v in _DIRECT.items()}, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
#: dtypes whose values adaptvc can compute with
NUMERIC_DTYPES = frozenset(_ITEMSIZE)


def _fp8_table(exp_bits: int, man_bits: int, bias: int, finite_only: bool) -> np.ndarray:
    """float64 value of each of the 256 bytes of an fp8 format (OCP E4M3FN / E5M2)."""
    out = np.empty(256, dtype=np.float64)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> man_bits) & ((1 << exp_bits) - 1)
        man = byte & ((1 << man_bits) - 1)
        if exp == 0:
            value = man / (1 << man_bits) * 2.0 ** (1 - bias)
        elif finite_only and exp == (1 << exp_bits) - 1 and man == (1 << man_bits) - 1:
            value = float("nan")  # E4M3FN: only S.1111.111 is NaN, no infinities
        elif not finite_only and exp == (1 << exp_bits) - 1:
            value = float("inf") if man == 0 else float("nan")
        else:
            value = (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
        out[byte] = sign * value
    return out


_FP8 = {"F8_E4M3": _fp8_table(4, 3, 7, True), "F8_E5M2": _fp8_table(5, 2, 15, False)}


def itemsize(dtype: str) -> int:
    return _ITEMSIZE[dtype]


def to_float64(raw: bytes | bytearray | memoryview | np.ndarray, dtype: str) -> np.ndarray:
    """The values of ``raw`` (little-endian ``dtype``) as a flat float64 array."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    if dtype == "BF16":
        return (buf.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype in _FP8:
        return _FP8[dtype][buf]
    if dtype in _DIRECT:
        return buf.view(_DIRECT[dtype]).astype(np.float64)
    raise ValueError(f"cannot compute with dtype {dtype}")
