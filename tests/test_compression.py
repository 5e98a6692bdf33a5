"""Lossless compression of stored tensors (gc --aggressive): ids unchanged, bytes identical, damage detected."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptvc import Repository
from adaptvc.errors import AdaptvcError, CorruptObjectError
from adaptvc.storage.compression import compress, decompress
from tests import helpers
from tests.light import corrupt_stored


@pytest.mark.parametrize("dtype, make", [
    ("BF16", lambda n: (np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 0.02).view(np.uint32)
     .__rshift__(16).astype("<u2").tobytes()),
    ("F16", lambda n: (np.random.default_rng(1).standard_normal(n) * 0.02).astype("<f2").tobytes()),
    ("F32", lambda n: np.zeros(n, dtype="<f4").tobytes()),
    ("F64", lambda n: np.linspace(0, 1, n).astype("<f8").tobytes()),
    (None, lambda n: b"config " * n),
])
def test_round_trip(dtype, make):
    data = make(10_000)
    packed = compress(data, dtype)
    assert packed is not None and len(packed) < len(data)
    assert decompress(packed) == data


def test_bf16_weights_shrink_to_about_two_thirds():
    data = (np.random.default_rng(0).standard_normal(1_000_000, dtype=np.float32) * 0.02).view(np.uint32)
    packed = compress((data >> 16).astype("<u2").tobytes(), "BF16")
    assert packed is not None and len(packed) / 2_000_000 < 0.70


def test_incompressible_bytes_are_left_alone():
    assert compress(os.urandom(100_000), None) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_damaged_containers_are_refused(blob):
    try:
        decompress(b"AVZ1" + blob)
    except CorruptObjectError:
        return


def test_gc_aggressive_keeps_every_version_byte_identical(tmp_path):
    repo = Repository.init(tmp_path / "w")
    model = helpers.lora_model(seed=1, r=8, dtype=torch.bfloat16)
    saved = []
    for i in range(3):
        helpers.randomize(model, seed=i)
        model.save_pretrained(repo.work_tree)
        repo.commit(f"v{i}")
        saved.append(helpers.sha256(repo.work_tree / "adapter_model.safetensors"))
    objects = repo.admin_dir / "objects"
    before = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
    ids_before = set(repo.store.iter_ids())
    report = repo.gc(aggressive=True)
    after = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
    assert report.bytes_compressed > 0 and after < before
    assert set(repo.store.iter_ids()) == ids_before  # ids are hashes of the uncompressed bytes
    compressed = [t.blob for c in repo.log() for _, t in repo.show(c.id).snapshot.tensors()
                  if repo.store.is_compressed(t.blob)]
    assert compressed
    assert repo.fsck().ok
    for i, c in enumerate(reversed(repo.log())):
        out = tmp_path / f"o{i}"
        repo.checkout(c.id, out)
        assert helpers.sha256(out / "adapter_model.safetensors") == saved[i]
    assert repo.diff("HEAD~1", "HEAD").summary()["modules"]["changed"] == 4
    repo.add_remote("origin", str(tmp_path / "bare"))
    repo.push()
    clone = Repository.clone(str(tmp_path / "bare"), tmp_path / "clone")
    assert clone.status().clean and clone.fsck().ok

    corrupt_stored(repo.store, compressed[0], position=-5)
    repo = Repository(repo.work_tree)  # a fresh reader (no mapping of the pack from before)
    assert not repo.fsck().ok
    with pytest.raises(AdaptvcError):
        for c in repo.log():
            repo.checkout(c.id, tmp_path / "broken", force=True)
