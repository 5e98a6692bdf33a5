"""Merging tensors that are not low-rank factors (modules_to_save copies, IA3 vectors, prompt embeddings):
each is A + B − O computed in float64 and rounded once to the stored dtype, the rounding recorded; checked
against a dense float64 reference with numpy alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adaptvc import Repository
from tests.light import write_adapter

HEAD = "base_model.model.lm_head.weight"


def with_head(folder, seed: int, head: np.ndarray) -> None:
    write_adapter(folder, seed=seed, config={"modules_to_save": ["lm_head"]})
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors[HEAD] = head
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_dense_tensor_changed_on_both_sides_is_the_float64_sum_rounded_once(tmp_path, dtype):
    rng = np.random.default_rng(0)
    o = rng.standard_normal((64, 32)).astype(dtype)
    a = (o.astype(np.float64) + 0.01 * rng.standard_normal(o.shape)).astype(dtype)
    b = (o.astype(np.float64) + 0.01 * rng.standard_normal(o.shape)).astype(dtype)
    repo = Repository.init(tmp_path / "w")
    with_head(repo.work_tree, 1, o)
    repo.commit("base")
    repo.switch("chat", create=True)
    with_head(repo.work_tree, 1, b)
    repo.commit("theirs: lm_head")
    repo.switch("main")
    with_head(repo.work_tree, 1, a)
    repo.commit("ours: lm_head")
    result = repo.merge("chat", "merge")
    assert HEAD in result.to_json()["modules"]["combined"]

    out = tmp_path / "merged"
    repo.checkout("HEAD", out)
    merged = load_file(str(out / "adapter_model.safetensors"))
    exact = a.astype(np.float64) + b.astype(np.float64) - o.astype(np.float64)
    assert merged[HEAD].dtype == dtype
    assert np.array_equal(merged[HEAD], exact.astype(dtype))  # one rounding, from float64
    if dtype == np.float16:  # rounding each step in fp16 would differ somewhere: the test can tell them apart
        assert not np.array_equal(merged[HEAD], (a + b) - o)
    recorded = repo.show("HEAD").commit.metadata["merge"]["combined"][HEAD]
    stored = merged[HEAD].astype(np.float64)
    assert recorded["max_abs_rounding"] == pytest.approx(float(np.max(np.abs(stored - exact))), rel=1e-12, abs=0)
    assert recorded["exact"] is bool(np.array_equal(stored, exact))
    for name, value in load_file(str(repo.work_tree / "adapter_model.safetensors")).items():
        if name != HEAD:  # the LoRA factors were the same on every side: unchanged
            assert np.array_equal(merged[name], value)
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["lm_head"]
