"""Property-based tests: whatever the input, the parsers either work or raise adaptvc's own error type."""

from __future__ import annotations

import io
import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptvc.errors import AdaptvcError, InvalidAdapterError, InvalidRefNameError, RevisionError
from adaptvc.objects import Snapshot
from adaptvc.ops.revisions import parse_revision
from adaptvc.refnames import check_ref_name
from adaptvc.safetensors_format import read_header

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
tensor_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "BF16", "F16", "U8", "F4", "NOPE"]) | json_values,
    "shape": st.lists(st.integers(-2, 40), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-4, 300), min_size=0, max_size=3) | json_values,
})


def parse(blob: bytes) -> None:
    try:
        header = read_header(io.BytesIO(blob), len(blob), "fuzz.safetensors")
    except InvalidAdapterError:
        return
    # accepted: then it is exactly consistent
    data = len(blob) - header.size
    assert sum(t.nbytes for t in header.tensors) == data
    assert header.raw == blob[: header.size]


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(blob):
    parse(blob)


@FAST
@given(st.dictionaries(st.text(max_size=12), tensor_entry | json_values, max_size=5), st.binary(max_size=256),
       st.integers(-8, 8))
def test_structured_headers(header, data, length_skew):
    raw = json.dumps(header).encode()
    parse(struct.pack("<Q", max(0, len(raw) + length_skew)) + raw + data)


@FAST
@given(st.text(max_size=60))
def test_revision_parser(text):
    try:
        base, steps = parse_revision(text)
    except RevisionError:
        return
    assert base and all(op in "~^" and n >= 0 for op, n in steps)


@FAST
@given(st.text(max_size=60))
def test_ref_name_checker(text):
    try:
        assert check_ref_name(text) == text
    except InvalidRefNameError:
        return
    # an accepted name is a safe relative path below refs/
    assert not text.startswith(("/", "-", ".")) and ".." not in text and "\x00" not in text


@FAST
@given(json_values)
def test_snapshot_decoder(value):
    try:
        Snapshot.from_dict(value)
    except AdaptvcError:
        return


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=30))
def test_revisions_resolve_or_fail_cleanly(tmp_path, text):
    from adaptvc import Repository

    root = tmp_path / "repo"
    repo = Repository(root) if (root / ".adaptvc").exists() else Repository.init(root)
    try:
        repo.resolve(text)
    except AdaptvcError:
        return
