"""``adaptvc.serving.hotswap``: a live PeftModel takes another version's weights in place, with PEFT's hotswap.

Real tiny Llama models with real PEFT LoRA adapters (tests/helpers.py). After a swap, the outputs must equal
``PeftModel.from_pretrained`` of that version's checkout, bit for bit; a swap PEFT cannot do is refused in one
line and leaves the model exactly as it was.
"""

from __future__ import annotations

import pytest
import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model

from adaptvc import Repository
from adaptvc.basemodel import BaseMismatchError
from adaptvc.serving.hotswap import HotswapRefusedError, hotswap
from tests import helpers


def commit_lora(repo: Repository, tag: str, seed: int, *, r: int = 4, alpha: int | None = None,
                targets: tuple[str, ...] = ("q_proj", "v_proj"), base: str | None = None, **extra) -> None:
    config = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules=list(targets), **extra)
    model = get_peft_model(helpers.tiny_base(), config)
    helpers.randomize(model, seed)
    model.save_pretrained(repo.work_tree)
    repo.commit(tag, base=base)
    repo.tag(tag)


@pytest.fixture
def repo(tmp_path) -> Repository:
    r = Repository.init(tmp_path / "bot")
    commit_lora(r, "v1", seed=1)
    commit_lora(r, "v2", seed=2, alpha=16)  # same rank and targets, another scale
    return r


def fresh(repo: Repository, rev: str, tmp_path) -> torch.Tensor:
    out = tmp_path / f"checkout-{rev}"
    repo.checkout(rev, out)
    return helpers.outputs(PeftModel.from_pretrained(helpers.tiny_base(), out).eval())


def lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_outputs_after_a_hotswap_equal_a_fresh_load_and_nothing_is_reloaded(repo, tmp_path):
    live = repo.load(helpers.tiny_base(), "v1")
    before = helpers.outputs(live)
    params = {n: (p, p.data_ptr()) for n, p in live.named_parameters() if "lora_" in n}
    result = hotswap(live, repo.work_tree, "v2")
    assert result.commit == repo.resolve("v2") and result.tensors == 8 and result.padded == result.zeroed == ()
    after = helpers.outputs(live)
    assert torch.equal(after, fresh(repo, "v2", tmp_path))  # bit for bit, the new scale included
    assert not torch.equal(after, before)
    for n, p in live.named_parameters():  # the same parameters, written in place
        if "lora_" in n:
            assert params[n][0] is p and params[n][1] == p.data_ptr()
    hotswap(live, repo, "v1")  # a Repository works as well as a path; and back again
    assert torch.equal(helpers.outputs(live), before)


def test_fewer_targets_and_a_smaller_rank_swap_as_peft_does(repo, tmp_path):
    commit_lora(repo, "q-only", seed=3, targets=("q_proj",))
    commit_lora(repo, "rank2", seed=4, r=2)
    live = repo.load(helpers.tiny_base(), "v1")
    res = hotswap(live, repo.work_tree, "q-only")  # v_proj is no longer adapted: its LoRA weights become zero
    assert len(res.zeroed) == 2 and all(m.endswith("v_proj") for m in res.zeroed)
    assert torch.equal(helpers.outputs(live), fresh(repo, "q-only", tmp_path))
    res = hotswap(live, repo.work_tree, "rank2")  # rank 2 into rank-4 tensors: zero-padded
    assert len(res.padded) == 4
    assert torch.allclose(helpers.outputs(live), fresh(repo, "rank2", tmp_path), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case, needle", [
    ("rank8", "larger rank"),
    ("more-targets", "has no LoRA layer"),
    ("ia3", "of type IA3"),
    ("rslora", "use_rslora"),
    ("dora", "DoRA"),
])
def test_what_peft_cannot_swap_is_refused_and_the_model_is_unchanged(repo, case, needle):
    if case == "rank8":
        commit_lora(repo, case, seed=5, r=8)
    elif case == "more-targets":
        commit_lora(repo, case, seed=5, targets=("q_proj", "k_proj", "v_proj"))
    elif case == "rslora":
        commit_lora(repo, case, seed=5, use_rslora=True)
    elif case == "dora":  # DoRA on both sides: PEFT's hotswap cannot reach the magnitude vectors
        commit_lora(repo, "dora-v1", seed=5, use_dora=True)
        commit_lora(repo, case, seed=6, use_dora=True)
    else:
        model = get_peft_model(helpers.tiny_base(), IA3Config(target_modules=["k_proj", "down_proj"],
                                                              feedforward_modules=["down_proj"]))
        model.save_pretrained(repo.work_tree)
        repo.commit(case)
        repo.tag(case)
    live = repo.load(helpers.tiny_base(), "dora-v1" if case == "dora" else "v1")
    before, params = helpers.outputs(live), lora_params(live)
    with pytest.raises(HotswapRefusedError, match=needle) as err:
        hotswap(live, repo.work_tree, case)
    assert "\n" not in str(err.value) and str(err.value).endswith("the model was not changed")
    assert torch.equal(helpers.outputs(live), before)
    assert all(torch.equal(p, params[n]) for n, p in lora_params(live).items())


def test_a_merged_adapter_an_unknown_name_and_a_plain_model_are_refused(repo):
    live = repo.load(helpers.tiny_base(), "v1")
    with pytest.raises(HotswapRefusedError, match="no adapter named 'other'"):
        hotswap(live, repo.work_tree, "v2", adapter_name="other")
    with pytest.raises(HotswapRefusedError, match="not a PeftModel"):
        hotswap(helpers.tiny_base(), repo.work_tree, "v2")
    live.merge_adapter()
    with pytest.raises(HotswapRefusedError, match="unmerge_adapter"):
        hotswap(live, repo.work_tree, "v2")


def test_the_base_model_is_checked_against_the_pin_unless_forced(tmp_path, base_dir):
    repo = Repository.init(tmp_path / "bot")
    commit_lora(repo, "v1", seed=1, base=str(base_dir))
    commit_lora(repo, "v2", seed=2, base=str(base_dir))
    assert repo.read_commit("v2").base.fingerprint
    live = repo.load(helpers.tiny_base(seed=5), "v1", force=True)  # another base, loaded anyway
    before = helpers.outputs(live)
    with pytest.raises(BaseMismatchError, match="values of the targeted weights differ"):
        hotswap(live, repo.work_tree, "v2")
    assert torch.equal(helpers.outputs(live), before)
    hotswap(live, repo.work_tree, "v2", force=True)
    assert not torch.equal(helpers.outputs(live), before)

    right = repo.load(helpers.tiny_base(), "v1")  # the pinned base: checked and swapped
    hotswap(right, repo.work_tree, "v2")
    assert torch.equal(helpers.outputs(right), fresh(repo, "v2", tmp_path))
