"""Recording a version built in memory, with any number of parents, through the public Python API (what a
merge needs): the same write order, the same path rule and the same byte-exact checkout as a folder commit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from adaptvc import Repository
from adaptvc.errors import InvalidTextError, RefMovedError, UnsafePathError
from tests.light import write_adapter


def test_a_two_parent_commit_from_tensors_in_memory(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    base = repo.commit("origin")
    repo.branch("chat")
    write_adapter(work, seed=2)
    ours = repo.commit("code data")
    repo.switch("chat")
    write_adapter(work, seed=3)
    theirs = repo.commit("chat data")
    repo.switch("main")

    rng = np.random.default_rng(7)
    arrays = {f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{f}.weight":
              rng.standard_normal((4, 32) if f == "A" else (32, 4)).astype(np.float32)
              for i in range(2) for f in "AB"}
    config = json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}).encode()
    merged = repo.record("merge chat into main", {"adapter_config.json": config,
                                                  "adapter_model.safetensors": arrays},
                         parents=["main", "chat"], metadata={"merge_base": base.id})
    assert merged.parents == (ours.id, theirs.id)
    assert repo.head() == merged.id and repo.current_branch() == "main"
    assert merged.base == ours.base and merged.metadata == {"merge_base": base.id}
    assert [c.id for c in repo.log(max_count=3)] == [merged.id, theirs.id, ours.id]
    assert repo.resolve("HEAD^2") == theirs.id
    out = tmp_path / "out"
    repo.checkout("HEAD", out)
    loaded = load_file(str(out / "adapter_model.safetensors"))
    assert sorted(loaded) == sorted(arrays) and all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    assert (out / "adapter_config.json").read_bytes() == config
    assert repo.fsck().ok


def test_recording_refuses_what_a_folder_commit_would_refuse(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    first = repo.commit("v1")
    with pytest.raises(UnsafePathError):
        repo.record("x", {"../escape": b"x"})
    with pytest.raises(InvalidTextError):
        repo.record("bad \ud800", {"adapter_config.json": b"{}"})
    # the branch moved since the caller looked at it: compare-and-swap refuses, nothing is lost
    write_adapter(work, seed=2)
    second = repo.commit("v2")
    with pytest.raises(RefMovedError):
        from adaptvc.ops.record import Target, record

        snap = repo.show(first.id).snapshot
        record(repo.store, repo.refs, snap, parents=[first.id], message="late", author="t",
               target=Target("refs/heads/main", first.id))
    assert repo.head() == second.id
