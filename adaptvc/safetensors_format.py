"""A strict reader for the safetensors header, with every size bounded before it is trusted.

We parse the header ourselves (instead of ``safe_open``) because we need the exact header bytes and each
tensor's byte range, and because the file may come from a stranger: the length prefix, offsets, dtypes
and names are all checked before anything is allocated or read.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import InvalidAdapterError
from .parsing import json_depth_ok

#: Same bound as the safetensors library: a header is JSON text describing tensors, never this large.
MAX_HEADER_SIZE = 100_000_000

@dataclass(frozen=True)
class DType:
    """One dtype of the safetensors format: its size, and its names in numpy and torch where they have one."""

    bits: int
    numpy: str | None = None  # the numpy dtype of the raw little-endian values, when numpy has it
    torch: str | None = None  # the attribute of the torch module
    floating: bool = False


#: The one table of dtypes: every other module (numpy conversion, compression, torch loading) derives from it.
DTYPES: dict[str, DType] = {
    "BOOL": DType(8, "u1", "bool"), "U8": DType(8, "u1", "uint8"), "I8": DType(8, "i1", "int8"),
    "F8_E5M2": DType(8, None, "float8_e5m2", True), "F8_E4M3": DType(8, None, "float8_e4m3fn", True),
    "F8_E8M0": DType(8, None, "float8_e8m0fnu", True),
    "I16": DType(16, "<i2", "int16"), "U16": DType(16, "<u2", "uint16"), "F16": DType(16, "<f2", "float16", True),
    "BF16": DType(16, None, "bfloat16", True),
    "I32": DType(32, "<i4", "int32"), "U32": DType(32, "<u4", "uint32"), "F32": DType(32, "<f4", "float32", True),
    "C64": DType(64, "<c8", "complex64"),
    "I64": DType(64, "<i8", "int64"), "U64": DType(64, "<u8", "uint64"), "F64": DType(64, "<f8", "float64", True),
    "F4": DType(4, None, None, True), "F6_E2M3": DType(6, None, None, True), "F6_E3M2": DType(6, None, None, True),
}
#: Bits per element of each dtype the safetensors format defines.
DTYPE_BITS: dict[str, int] = {name: d.bits for name, d in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    raw: bytes  # the 8-byte little-endian length followed by the JSON header, as in the file
    tensors: tuple[TensorInfo, ...]  # in offset order
    metadata: dict[str, str] | None

    @property
    def size(self) -> int:
        return len(self.raw)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_tensor_name(name: str) -> None:
    if not name:
        raise ValueError("empty tensor name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"tensor name {name.encode('utf-8', 'backslashreplace').decode()!r} is not valid "
                         "Unicode") from None
    if _CONTROL.search(name):
        raise ValueError(f"tensor name {name!r} has a control character")
    if name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"tensor name {name!r} looks like a path")


def parse_header(raw_json: bytes, data_size: int) -> tuple[tuple[TensorInfo, ...], dict[str, str] | None]:
    """Validate a JSON header against a data section of ``data_size`` bytes.

    Tensors must cover the data section exactly, back to back, as the format requires; this is also what
    lets a checkout rebuild the file byte for byte from its tensors.
    """
    text = raw_json.decode("utf-8")  # strict: non-UTF-8 names are refused
    obj = json.loads(text, object_pairs_hook=_no_duplicates)
    if not json_depth_ok(obj, 4):
        raise ValueError("header nested too deeply")
    if not isinstance(obj, dict):
        raise ValueError("header is not a JSON object")
    metadata = obj.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise ValueError("__metadata__ must map strings to strings")
    tensors = []
    for name, info in obj.items():
        check_tensor_name(name)
        if not isinstance(info, dict):
            raise ValueError(f"tensor {name!r}: entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers")
        if not (
            isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise ValueError(f"tensor {name!r}: data_offsets must be two integers")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ValueError(f"tensor {name!r}: data_offsets {offsets} outside the data ({data_size} bytes)")
        numel = 1
        for d in shape:
            numel *= d
        bits = numel * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise ValueError(f"tensor {name!r}: {end - begin} bytes do not fit {dtype} {shape}")
        tensors.append(TensorInfo(name, dtype, tuple(shape), begin, end))
    tensors.sort(key=lambda t: (t.begin, t.end))
    pos = 0
    for t in tensors:
        if t.begin != pos:
            raise ValueError(f"tensor {t.name!r}: data overlaps another tensor or leaves a gap at byte {pos}")
        pos = t.end
    if pos != data_size:
        raise ValueError(f"{data_size - pos} bytes after the last tensor")
    return tuple(tensors), metadata


def read_header(f: BinaryIO, file_size: int, path: str) -> Header:
    """Read and validate the header of the safetensors file open as ``f`` (at offset 0)."""
    prefix = f.read(8)
    if len(prefix) != 8:
        raise InvalidAdapterError(path, "not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER_SIZE:
        raise InvalidAdapterError(path, f"safetensors header of {n} bytes is larger than the limit")
    if 8 + n > file_size:
        raise InvalidAdapterError(path, f"truncated: header of {n} bytes runs past the end of the file")
    raw_json = f.read(n)
    if len(raw_json) != n:
        raise InvalidAdapterError(path, "truncated while reading the header")
    try:
        tensors, metadata = parse_header(raw_json, file_size - 8 - n)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidAdapterError(path, f"invalid safetensors header: {e}") from None
    return Header(prefix + raw_json, tensors, metadata)
