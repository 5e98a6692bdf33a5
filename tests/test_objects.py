"""The on-disk encoding of snapshots and commits is a format: these tests pin it byte for byte."""

from __future__ import annotations

import pytest

from adaptvc.errors import CorruptObjectError, UnsafePathError
from adaptvc.hashing import hash_bytes
from adaptvc.objects import BasePin, Commit, FileEntry, SafetensorsLayout, Snapshot, TensorEntry

H = "0" * 31 + "1"
H2 = "0" * 31 + "2"


def sample_snapshot() -> Snapshot:
    tensor = TensorEntry("base_model.model.layer.lora_A.weight", "F32", (4, 32), H2, 512)
    layout = SafetensorsLayout(H, 88, (tensor,))
    return Snapshot((FileEntry("adapter_model.safetensors", 600, H, layout),
                     FileEntry("adapter_config.json", 10, H2)))


def sample_commit() -> Commit:
    return Commit(snapshot=H, parents=(H2,), message="epoch 1", author="A <a@b>",
                  timestamp="2026-01-02T03:04:05.000006+00:00",
                  base=BasePin("meta-llama/Llama-2-7b-hf", "abc"), metadata={"step": 5, "loss": 0.5})


def test_snapshot_encoding_is_pinned():
    snap = sample_snapshot()
    expected = (
        b'{"files":[{"hash":"00000000000000000000000000000002","path":"adapter_config.json","size":10},'
        b'{"hash":"00000000000000000000000000000001","path":"adapter_model.safetensors",'
        b'"safetensors":{"header":"00000000000000000000000000000001","header_size":88,"tensors":'
        b'[{"blob":"00000000000000000000000000000002","dtype":"F32","name":'
        b'"base_model.model.layer.lora_A.weight","shape":[4,32],"size":512}]},"size":600}],'
        b'"format":1,"type":"snapshot"}'
    )
    assert snap.encode() == expected
    assert snap.id == hash_bytes(expected)


def test_commit_encoding_is_pinned():
    c = sample_commit()
    expected = (
        b'{"author":"A <a@b>","base":{"fingerprint":null,"name_or_path":"meta-llama/Llama-2-7b-hf",'
        b'"revision":"abc"},"format":1,"message":"epoch 1","metadata":{"loss":0.5,"step":5},'
        b'"parents":["00000000000000000000000000000002"],"provenance":null,'
        b'"snapshot":"00000000000000000000000000000001","timestamp":"2026-01-02T03:04:05.000006+00:00",'
        b'"type":"commit"}'
    )
    assert c.encode() == expected
    assert len(c.id) == 32


def test_base_pin_local_path_is_kept_beside_a_portable_name():
    c = Commit(snapshot=H, parents=(), message="m", author="a", timestamp="t",
               base=BasePin("org/base", None, None, "/data/base"))
    assert b'"base":{"fingerprint":null,"local_path":"/data/base","name_or_path":"org/base","revision":null}' \
        in c.encode()
    assert Commit.from_dict(c.to_dict()).base.local_path == "/data/base"


def test_round_trip():
    snap, c = sample_snapshot(), sample_commit()
    assert Snapshot.from_dict(snap.to_dict()) == snap
    assert Commit.from_dict(c.to_dict()) == c
    assert Commit.from_dict(c.to_dict()).id == c.id


def test_snapshot_files_are_sorted_so_order_does_not_change_the_id():
    a = sample_snapshot()
    b = Snapshot(tuple(reversed(a.files)))
    assert a.id == b.id


def test_non_finite_metadata_becomes_null():
    c = Commit(snapshot=H, parents=(), message="m", author="a", timestamp="t",
               metadata={"loss": float("nan"), "nested": [float("inf")]})
    assert b'"metadata":{"loss":null,"nested":[null]}' in c.encode()


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", "", ".adaptvc/HEAD",
                                  "C:/x", "a//b"])
def test_hostile_file_paths_are_refused(path):
    d = sample_snapshot().to_dict()
    d["files"][0]["path"] = path
    with pytest.raises(UnsafePathError):
        Snapshot.from_dict(d)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(type="commit"),
    lambda d: d.update(format=99),
    lambda d: d["files"][1].update(size="10"),
    lambda d: d["files"][1].update(hash="xyz"),
    lambda d: d["files"][1]["safetensors"]["tensors"][0].update(shape=[-1]),
    lambda d: d["files"][1]["safetensors"]["tensors"][0].update(size=7),  # sizes no longer add up
    lambda d: d["files"].append(dict(d["files"][1])),  # duplicate path
])
def test_malformed_snapshots_are_refused(mutate):
    d = sample_snapshot().to_dict()
    mutate(d)
    with pytest.raises(CorruptObjectError):
        Snapshot.from_dict(d)


def test_malformed_commit_is_refused():
    d = sample_commit().to_dict()
    d["parents"] = ["not-an-id"]
    with pytest.raises(CorruptObjectError):
        Commit.from_dict(d)
    with pytest.raises(CorruptObjectError):
        Commit.from_dict([1, 2])


def test_snapshot_tensor_names_are_qualified_by_folder():
    t = TensorEntry("w", "F32", (1,), H, 4)
    snap = Snapshot((FileEntry("adapter_model.safetensors", 12, H, SafetensorsLayout(H, 8, (t,))),
                     FileEntry("second/adapter_model.safetensors", 12, H2, SafetensorsLayout(H, 8, (t,)))))
    assert [n for n, _ in snap.tensors()] == ["w", "second/w"]
