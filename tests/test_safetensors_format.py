"""The safetensors header reader: real files parse exactly; hostile ones are refused with bounded memory."""

from __future__ import annotations

import io
import json
import struct

import pytest
from safetensors import safe_open

from adaptvc.errors import InvalidAdapterError
from adaptvc.safetensors_format import MAX_HEADER_SIZE, read_header


def make_file(header: dict | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def parse(blob: bytes):
    return read_header(io.BytesIO(blob), len(blob), "x.safetensors")


def test_real_peft_file_matches_safetensors_library(tmp_path, lora_model):
    lora_model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    blob = path.read_bytes()
    header = parse(blob)
    with safe_open(str(path), "np") as f:
        assert sorted(t.name for t in header.tensors) == sorted(f.keys())
        for t in header.tensors:
            assert list(t.shape) == list(f.get_slice(t.name).get_shape())
    assert header.raw == blob[: header.size]
    assert header.metadata == {"format": "pt"}
    # tensors tile the data section exactly, in offset order
    assert header.tensors[0].begin == 0
    assert header.tensors[-1].end == len(blob) - header.size


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [8, 12]}}


def test_good_synthetic_file():
    h = parse(make_file(GOOD, bytes(12)))
    assert [(t.name, t.begin, t.end) for t in h.tensors] == [("a", 0, 8), ("b", 8, 12)]


@pytest.mark.parametrize("blob, reason", [
    (b"\x01\x02", "shorter than 8 bytes"),
    (struct.pack("<Q", 1000) + b"{}", "truncated"),
    (struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "larger than the limit"),
    (struct.pack("<Q", 2**63) + b"{}", "larger than the limit"),
    (make_file(b"[1, 2]", b""), "not a JSON object"),
    (make_file(b"{not json", b""), "invalid safetensors header"),
    (make_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": 1}', bytes(4)), "duplicate"),
    (make_file('{"\udcff": 1}'.encode("utf-8", "surrogatepass"), b""), "invalid safetensors header"),
    (make_file({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "unknown dtype"),
    (make_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)), "do not fit"),
    (make_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(3)), "outside the data"),
    (make_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, bytes(6)), "overlaps"),
    (make_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "gap"),
    (make_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9)), "after the last"),
    (make_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)), "non-negative"),
    (make_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, bytes(4)), "two integers"),
    (make_file({"../../etc/x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)), "path"),
    (make_file({"a\x00b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)), "control"),
    (make_file({"__metadata__": {"k": 1}}, b""), "__metadata__"),
])
def test_hostile_headers_are_refused(blob, reason):
    with pytest.raises(InvalidAdapterError, match=reason.replace("[", r"\[")):
        parse(blob)
