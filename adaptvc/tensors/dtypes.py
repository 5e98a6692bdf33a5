"""Tensor bytes to float64 with numpy alone: bf16 is the top half of a float32, fp8 goes through a table."""

from __future__ import annotations

import numpy as np

from ..safetensors_format import DTYPES

_DIRECT = {name: np.dtype(d.numpy) for name, d in DTYPES.items() if d.numpy and not name.startswith("C")}
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


def to_float64(raw: bytes | bytearray | memoryview | np.ndarray, dtype: str,
               out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """The values of ``raw`` (little-endian ``dtype``) as a flat float64 array.

    With ``out`` (float64) and ``scratch`` (uint32), both at least as long, no memory is allocated: reusing
    buffers avoids faulting in fresh pages for every tensor, which costs more than the conversion."""
    if dtype not in _ITEMSIZE:
        raise ValueError(f"cannot compute with dtype {dtype}")
    buf = np.frombuffer(raw, dtype=np.uint8)
    n = len(buf) // _ITEMSIZE[dtype]
    target = np.empty(n, dtype=np.float64) if out is None else out[:n]
    if dtype == "BF16":  # the top half of a float32
        wide = np.empty(n, dtype=np.uint32) if scratch is None else scratch[:n]
        np.left_shift(buf.view("<u2"), 16, out=wide, dtype=np.uint32)
        target[:] = wide.view(np.float32)
    elif dtype in _FP8:
        np.take(_FP8[dtype], buf, out=target)
    else:
        target[:] = buf.view(_DIRECT[dtype])
    return target


class Workspace:
    """Named float64 buffers (and one uint32 scratch) reused across tensors of varying size."""

    def __init__(self) -> None:
        self._f64: dict[str, np.ndarray] = {}
        self._u32 = np.empty(0, dtype=np.uint32)

    def convert(self, slot: str, raw: bytes | bytearray | memoryview, dtype: str) -> np.ndarray:
        n = len(raw) // _ITEMSIZE[dtype] if dtype in _ITEMSIZE else 0
        if self._f64.get(slot, np.empty(0)).size < n:
            self._f64[slot] = np.empty(n, dtype=np.float64)
        if self._u32.size < n:
            self._u32 = np.empty(n, dtype=np.uint32)
        return to_float64(raw, dtype, self._f64[slot], self._u32)
