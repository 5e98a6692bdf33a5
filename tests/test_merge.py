"""merge, revert, reset, restore, reflog expiry and ignore files, on real PEFT adapters (tiny Llama + LoRA).

Exactness is checked against a dense float64 reference (ΔW = s·B·A formed explicitly, d_out × d_in) and
against PEFT's own ``get_delta_weight`` of the merged checkout loaded with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from adaptvc import Repository
from adaptvc.ops.merge import MergeConflictError, MergeError
from tests import helpers
from tests.light import assert_refused, cli, ok, proc, write_adapter

P = "base_model.model.model.layers"
BOTH = f"{P}.0.self_attn.q_proj"       # changed on both sides
OURS = f"{P}.1.self_attn.q_proj"       # changed only on ours
THEIRS = f"{P}.1.self_attn.v_proj"     # changed only on theirs
SAME = f"{P}.0.self_attn.v_proj"       # changed on neither


def dense(path) -> dict[str, np.ndarray]:
    return {k: v.to(torch.float64).numpy() for k, v in load_file(str(path)).items()}


def delta(t: dict[str, np.ndarray], module: str, scale: float) -> np.ndarray:
    """ΔW = s·B·A, formed densely on purpose (the reference)."""
    return scale * t[f"{module}.lora_B.weight"] @ t[f"{module}.lora_A.weight"]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def work_files(folder: Path) -> dict[str, str]:
    """The work tree's files, not the repository's own folder (a status may refresh its stat cache)."""
    return {p: h for p, h in helpers.files_digest(folder).items() if not p.startswith(".adaptvc/")}


def save_commit(repo: Repository, model, message: str) -> str:
    model.save_pretrained(repo.work_tree)
    return repo.commit(message).id


def checkout(repo: Repository, rev: str, name: str) -> Path:
    out = repo.work_tree.parent / name
    repo.checkout(rev, out)
    return out


def three_way(tmp_path: Path, dtype=None) -> tuple[Repository, dict[str, str]]:
    """base O; theirs (branch chat) changes BOTH and THEIRS; ours (main) changes BOTH and OURS."""
    repo = Repository.init(tmp_path / "w")
    ids = {"base": save_commit(repo, helpers.lora_model(seed=1, dtype=dtype), "base")}
    repo.switch("chat", create=True)
    m = helpers.lora_model(seed=1, dtype=dtype)
    helpers.randomize(m, 11, only="layers.0.self_attn.q_proj")
    helpers.randomize(m, 12, only="layers.1.self_attn.v_proj")
    ids["theirs"] = save_commit(repo, m, "chat data")
    repo.switch("main")
    m = helpers.lora_model(seed=1, dtype=dtype)
    helpers.randomize(m, 21, only="layers.0.self_attn.q_proj")
    helpers.randomize(m, 22, only="layers.1.self_attn.q_proj")
    ids["ours"] = save_commit(repo, m, "code data")
    return repo, ids


def peft_layers(model) -> dict[str, torch.nn.Module]:
    return {n: mod for n, mod in model.named_modules() if hasattr(mod, "get_delta_weight") and hasattr(mod, "lora_A")}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_three_way_merge_is_exact_for_lora(tmp_path, dtype):
    repo, ids = three_way(tmp_path, dtype)
    res = cli(repo.work_tree, "merge", "chat", "--json")
    ok(res)
    out = json.loads(res.stdout)
    assert set(out) == {"id", "parents", "merge_base", "fast_forward", "strategy", "modules", "conflicts"}
    assert set(out["modules"]) == {"unchanged", "ours", "theirs", "combined"}
    assert out["parents"] == [ids["ours"], ids["theirs"]] and out["merge_base"] == ids["base"]
    assert out["fast_forward"] is False and out["strategy"] == "combine" and out["conflicts"] == []
    assert out["modules"] == {"unchanged": [f"{P}.0.self_attn.v_proj"], "ours": [OURS], "theirs": [THEIRS],
                              "combined": [BOTH]}
    merged = repo.show("HEAD")
    assert merged.commit.id == out["id"] and merged.commit.parents == (ids["ours"], ids["theirs"])
    info = merged.commit.metadata["merge"]
    assert info["base"] == ids["base"] and info["strategy"] == "combine"
    assert info["combined"][BOTH] == {"exact": True, "residual": 0.0, "rank": 12}

    # one-side modules are that side's very blobs
    tensors = dict(merged.snapshot.tensors())
    for module, side in ((OURS, "ours"), (THEIRS, "theirs"), (SAME, "base")):
        theirs_tensors = dict(repo.show(ids[side]).snapshot.tensors())
        for f in ("lora_A", "lora_B"):
            assert tensors[f"{module}.{f}.weight"].blob == theirs_tensors[f"{module}.{f}.weight"].blob

    co = {k: dense(checkout(repo, ids[k], k) / "adapter_model.safetensors") for k in ("base", "ours", "theirs")}
    target = checkout(repo, "HEAD", "merged")
    cfg = json.loads((target / "adapter_config.json").read_text())
    assert cfg["rank_pattern"] == {"model.layers.0.self_attn.q_proj": 12}
    reference = {m: delta(co["ours"], m, 2.0) + delta(co["theirs"], m, 2.0) - delta(co["base"], m, 2.0)
                 for m in (BOTH, OURS, THEIRS, SAME)}
    # scales are equal: the merged factors are the inputs side by side, one block negated — bit-exact
    got = dense(target / "adapter_model.safetensors")
    a = got[f"{BOTH}.lora_A.weight"]
    assert np.array_equal(a, np.concatenate([co[k][f"{BOTH}.lora_A.weight"] for k in ("ours", "theirs", "base")]))
    assert np.array_equal(got[f"{BOTH}.lora_B.weight"][:, 8:], -co["base"][f"{BOTH}.lora_B.weight"])

    in_dtype = PeftModel.from_pretrained(helpers.tiny_base().to(dtype or torch.float32), str(target)).eval()
    model = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).eval()
    with torch.no_grad():
        for module, layer in peft_layers(in_dtype).items():  # PEFT's own delta weight, in the adapter's dtype
            w = layer.get_delta_weight("default").double().numpy()
            assert rel(w, reference[module]) < (1e-6 if dtype is None else 8e-3), module
        model64 = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).double().eval()
        for module, ref in peft_layers(model64).items():  # and in float64: equal to rounding of the sum alone
            assert rel(ref.get_delta_weight("default").numpy(), reference[module]) < 1e-13, module
        # the merged checkout serves the base with ΔW_ours + ΔW_theirs − ΔW_base merged in
        base = helpers.tiny_base()
        for module, ref in reference.items():
            lin = base.get_submodule(module.removeprefix("base_model.model."))
            lin.weight += torch.from_numpy(ref).to(lin.weight.dtype)
        want = helpers.outputs(base)
        got_logits = helpers.outputs(model)
    assert torch.allclose(got_logits, want, rtol=1e-4, atol=1e-4)
    # the work tree holds the merged version
    assert repo.status().clean and repo.head() == out["id"]


def test_rank_reduction_records_the_residual_of_a_dense_svd(tmp_path):
    repo, ids = three_way(tmp_path)
    result = repo.merge("chat", rank=5)
    info = repo.show("HEAD").commit.metadata["merge"]
    assert info["rank"] == 5 and info["combined"][BOTH]["rank"] == 5
    co = {k: dense(checkout(repo, ids[k], k) / "adapter_model.safetensors") for k in ("base", "ours", "theirs")}
    exact = delta(co["ours"], BOTH, 2.0) + delta(co["theirs"], BOTH, 2.0) - delta(co["base"], BOTH, 2.0)
    sigma = np.linalg.svd(exact, compute_uv=False)
    optimum = float(np.sqrt(np.sum(sigma[5:] ** 2)) / np.linalg.norm(exact))  # Eckart–Young
    recorded = info["combined"][BOTH]["residual"]
    assert optimum > 0.05 and abs(recorded - optimum) < 1e-6
    assert next(d for d in result.details if d.name == BOTH).residual == recorded
    target = checkout(repo, "HEAD", "merged")
    model = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).double().eval()
    with torch.no_grad():
        w = peft_layers(model)[BOTH].get_delta_weight("default").numpy()
    assert abs(rel(w, exact) - recorded) < 1e-9  # what PEFT computes is what was recorded
    assert json.loads((target / "adapter_config.json").read_text())["rank_pattern"] == \
        {"model.layers.0.self_attn.q_proj": 5}


def test_different_scales_are_folded_into_b_and_the_rounding_reported(tmp_path):
    repo = Repository.init(tmp_path / "w")
    save_commit(repo, helpers.lora_model(seed=1), "base")
    repo.switch("chat", create=True)
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 5, only="layers.0.self_attn.q_proj")
    m.save_pretrained(repo.work_tree)
    cfg = json.loads((repo.work_tree / "adapter_config.json").read_text())
    cfg["alpha_pattern"] = {"layers.0.self_attn.q_proj": 3}  # theirs: scale 3/4 on that module
    (repo.work_tree / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    theirs = repo.commit("chat").id
    repo.switch("main")
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 6, only="layers.0.self_attn.q_proj")
    ours = save_commit(repo, m, "code")
    base = repo.merge_base("main", "chat")[0]
    repo.merge("chat")
    co = {k: dense(checkout(repo, v, k[:2]) / "adapter_model.safetensors")
          for k, v in (("base", base), ("ours", ours), ("theirs", theirs))}
    exact = delta(co["ours"], BOTH, 2.0) + delta(co["theirs"], BOTH, 0.75) - delta(co["base"], BOTH, 2.0)
    d = repo.show("HEAD").commit.metadata["merge"]["combined"][BOTH]
    target = checkout(repo, "HEAD", "merged")
    model = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).double().eval()
    with torch.no_grad():
        w = peft_layers(model)[BOTH].get_delta_weight("default").numpy()
    assert d["exact"] is False and 0 < d["residual"] < 1e-6  # the theirs block went through fp32 once
    assert abs(rel(w, exact) - d["residual"]) < 1e-11  # recorded to the precision of the difference itself


@pytest.mark.parametrize("strategy", ["ties", "dare_linear", "svd"])
def test_lossy_strategies_use_peft_and_are_recorded(tmp_path, strategy):
    from peft.utils import merge_utils

    repo, ids = three_way(tmp_path)
    args = {"ties": ["--density", "0.5"], "dare_linear": ["--density", "0.7", "--seed", "3"], "svd": []}[strategy]
    out = json.loads(ok(cli(repo.work_tree, "merge", "chat", "--strategy", strategy, "--weights", "0.7,0.3",
                            "--rank", "6", *args, "--json")).stdout)
    assert out["strategy"] == strategy and out["modules"]["combined"] == [BOTH]
    assert out["modules"]["ours"] == [OURS] and out["modules"]["theirs"] == [THEIRS]  # one-side: untouched
    info = repo.show("HEAD").commit.metadata["merge"]
    assert info["weights"] == [0.7, 0.3] and info["rank"] == 6
    assert info["density"] == {"ties": 0.5, "dare_linear": 0.7, "svd": None}[strategy]
    assert info["seed"] == (3 if strategy == "dare_linear" else 0)
    co = {k: dense(checkout(repo, ids[k], k) / "adapter_model.safetensors") for k in ("base", "ours", "theirs")}
    o = delta(co["base"], BOTH, 2.0)
    tasks = [torch.from_numpy(delta(co[k], BOTH, 2.0) - o) for k in ("ours", "theirs")]
    w = torch.tensor([0.7, 0.3], dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(info["seed"])
        combined = {"ties": lambda: merge_utils.ties(tasks, w, 0.5),
                    "dare_linear": lambda: merge_utils.dare_linear(tasks, w, 0.7),
                    "svd": lambda: merge_utils.task_arithmetic(tasks, w)}[strategy]().numpy()
    want = o + combined
    sigma = np.linalg.svd(want, compute_uv=False)
    optimum = float(np.sqrt(np.sum(sigma[6:] ** 2)) / np.linalg.norm(want))
    got = dense(checkout(repo, "HEAD", "merged") / "adapter_model.safetensors")
    assert got[f"{BOTH}.lora_A.weight"].shape == (6, 32)
    assert abs(rel(delta(got, BOTH, 2.0), want) - optimum) < 1e-6  # the best rank-6 form of PEFT's result
    assert abs(info["combined"][BOTH]["residual"] - optimum) < 1e-6


def test_fast_forward_no_ff_and_ff_only(tmp_path):
    repo = Repository.init(tmp_path / "w")
    o = save_commit(repo, helpers.lora_model(seed=1), "base")
    repo.switch("chat", create=True)
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 3, only="v_proj")
    theirs = save_commit(repo, m, "chat")
    repo.switch("main")
    ok(cli(repo.work_tree, "branch", "keep", o))
    res = repo.merge("chat")
    assert res.fast_forward and res.id == theirs and repo.head() == theirs and repo.status().clean
    assert res.to_json()["modules"] == {"unchanged": [], "ours": [], "theirs": [], "combined": []}
    assert repo.merge("chat").message == "already up to date"
    ok(cli(repo.work_tree, "reset", "--hard", "keep"))
    res = json.loads(ok(cli(repo.work_tree, "merge", "chat", "--no-ff", "--json")).stdout)
    assert res["fast_forward"] is False and res["parents"] == [o, theirs]
    merged = repo.show("HEAD")
    assert merged.snapshot.id == repo.show(theirs).snapshot.id  # everything from theirs, byte for byte
    assert set(res["modules"]["theirs"]) == {f"{P}.{i}.self_attn.v_proj" for i in (0, 1)}
    # --ff-only refuses a merge that needs a commit, and changes nothing
    ok(cli(repo.work_tree, "reset", "--hard", "keep"))
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 4, only="q_proj")
    mine = save_commit(repo, m, "mine")
    assert_refused(cli(repo.work_tree, "merge", "chat", "--ff-only"), "not possible to fast-forward")
    assert repo.head() == mine and repo.status().clean


def test_refused_before_anything_is_written(tmp_path):
    repo = Repository.init(tmp_path / "w")
    save_commit(repo, helpers.lora_model(seed=1), "base")
    repo.switch("chat", create=True)
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 3, only="v_proj")
    m.save_pretrained(repo.work_tree)
    repo.commit("chat on another base", base="org/other-base")
    repo.switch("main")
    repo.branch("ia3")
    cfg = json.loads((repo.work_tree / "adapter_config.json").read_text())
    repo.switch("ia3")
    (repo.work_tree / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    repo.commit("another PEFT type")
    repo.switch("main")
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 4, only="q_proj")
    m.save_pretrained(repo.work_tree)
    head = repo.commit("code", base="org/tiny").id
    objects = set(repo.store.iter_ids())
    before = work_files(repo.work_tree)
    assert_refused(cli(repo.work_tree, "merge", "chat"), "different base models")
    assert repo.head() == head and set(repo.store.iter_ids()) == objects
    assert work_files(repo.work_tree) == before
    with pytest.raises(MergeError, match="different PEFT types: ours is LORA, theirs is IA3"):
        repo.merge("ia3")
    assert repo.head() == head and set(repo.store.iter_ids()) == objects
    # uncommitted changes are refused
    (repo.work_tree / "adapter_config.json").write_text("{}")
    assert_refused(cli(repo.work_tree, "merge", "chat"), "uncommitted changes")


def test_config_conflict_is_listed_by_key_and_resolved_by_glob(tmp_path):
    repo = Repository.init(tmp_path / "w")
    save_commit(repo, helpers.lora_model(seed=1), "base")

    def with_dropout(value: float, seed: int) -> None:
        m = helpers.lora_model(seed=1)
        helpers.randomize(m, seed, only="q_proj")
        m.save_pretrained(repo.work_tree)
        cfg = json.loads((repo.work_tree / "adapter_config.json").read_text())
        cfg["lora_dropout"] = value
        (repo.work_tree / "adapter_config.json").write_text(json.dumps(cfg))
        repo.commit(f"dropout {value}")

    repo.switch("chat", create=True)
    with_dropout(0.2, 5)
    repo.switch("main")
    with_dropout(0.1, 6)
    head, objects = repo.head(), set(repo.store.iter_ids())
    res = cli(repo.work_tree, "merge", "chat", "--json")
    assert_refused(res, "merge conflict", "adapter_config.json:lora_dropout")
    out = json.loads(res.stdout)
    assert out["id"] is None and out["conflicts"] == [
        {"name": "adapter_config.json:lora_dropout", "kind": "config",
         "reason": "changed on both sides: 0.0 -> 0.1 / 0.2"}]
    assert repo.head() == head and set(repo.store.iter_ids()) == objects
    with pytest.raises(MergeConflictError) as err:
        repo.merge("chat")
    assert [c.name for c in err.value.result.conflicts] == ["adapter_config.json:lora_dropout"]
    assert_refused(cli(repo.work_tree, "merge", "chat", "--theirs", "nothing-matches*"), "matches no")
    ok(cli(repo.work_tree, "merge", "chat", "--theirs", "adapter_config.json:lora_dropout"))
    assert json.loads((repo.work_tree / "adapter_config.json").read_text())["lora_dropout"] == 0.2
    assert repo.show("HEAD").commit.metadata["merge"]["combined"][BOTH]["exact"] is True


def test_dora_magnitudes_conflict_and_strategy_ours_takes_our_side(tmp_path):
    from peft import LoraConfig, get_peft_model

    def dora(seed: int):
        model = get_peft_model(helpers.tiny_base(), LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                               target_modules=["q_proj", "v_proj"]))
        helpers.randomize(model, 1)
        helpers.randomize(model, seed, only="layers.0.self_attn.q_proj")
        return model

    repo = Repository.init(tmp_path / "w")
    save_commit(repo, dora(1), "base")
    repo.switch("chat", create=True)
    save_commit(repo, dora(2), "chat")
    repo.switch("main")
    ours = save_commit(repo, dora(3), "code")
    with pytest.raises(MergeConflictError) as err:
        repo.merge("chat")
    assert [(c.name, c.reason) for c in err.value.result.conflicts] == [(BOTH, "a DoRA magnitude is not additive")]
    res = repo.merge("chat", strategy="ours")
    assert res.ours == (BOTH,) and res.combined == ()
    assert dict(repo.show("HEAD").snapshot.tensors())[f"{BOTH}.lora_A.weight"].blob == \
        dict(repo.show(ours).snapshot.tensors())[f"{BOTH}.lora_A.weight"].blob


def test_revert_undoes_a_one_module_commit_exactly(tmp_path):
    repo = Repository.init(tmp_path / "w")
    m = helpers.lora_model(seed=1)
    o = save_commit(repo, m, "base")
    helpers.randomize(m, 5, only="layers.1.self_attn.v_proj")
    c1 = save_commit(repo, m, "v_proj of layer 1")
    helpers.randomize(m, 6, only="layers.0.self_attn.q_proj")
    c2 = save_commit(repo, m, "q_proj of layer 0")
    res = json.loads(ok(cli(repo.work_tree, "revert", c1[:12], "--json")).stdout)
    assert res["modules"]["theirs"] == [THEIRS] and res["modules"]["combined"] == []
    new = repo.show("HEAD")
    assert new.commit.parents == (c2,) and new.commit.message.startswith('Revert "v_proj of layer 1"')
    assert new.commit.metadata["revert"]["commit"] == c1
    got = dict(new.snapshot.tensors())
    for rev, modules in ((o, [THEIRS]), (c2, [BOTH, OURS, SAME])):
        want = dict(repo.show(rev).snapshot.tensors())
        for module in modules:
            for f in ("lora_A", "lora_B"):
                assert got[f"{module}.{f}.weight"].blob == want[f"{module}.{f}.weight"].blob, module
    assert repo.status().clean
    assert_refused(cli(repo.work_tree, "revert", "HEAD~9"), "bad revision")


def test_reset_hard_leaves_untracked_files_alone(tmp_path):
    repo = Repository.init(tmp_path / "w")
    m = helpers.lora_model(seed=1)
    v1 = save_commit(repo, m, "v1")
    repo.tag("v1")
    helpers.randomize(m, 5)
    v2 = save_commit(repo, m, "v2")
    (repo.work_tree / "train.py").write_text("print('mine')\n")
    (repo.work_tree / "notes").mkdir()
    (repo.work_tree / "notes" / "a.txt").write_text("keep")
    helpers.edit_tensor(repo.work_tree / "adapter_model.safetensors", "lora_B")  # an uncommitted change
    untracked = {p: helpers.sha256(repo.work_tree / p) for p in ("train.py", "notes/a.txt")}
    res = json.loads(ok(cli(repo.work_tree, "reset", "--hard", "v1~0", "--json")).stdout)
    assert res == {"ref": "refs/heads/main", "old": res["old"], "new": v1, "mode": "hard"}
    assert repo.head() == v1 and repo.status().clean
    assert {p: helpers.sha256(repo.work_tree / p) for p in untracked} == untracked
    assert repo.refs.reflog("refs/heads/main")[0].message == "reset: moving to v1~0"
    # a soft reset moves only the branch
    ok(cli(repo.work_tree, "reset", "--soft", res["old"]))
    assert repo.head() == res["old"] and not repo.status().clean
    # an untracked file where the target has one of its files: refused before anything moves
    ok(cli(repo.work_tree, "reset", "--hard", "HEAD"))
    assert repo.show(v2).snapshot.file("README.md") is not None  # PEFT's model card
    (repo.work_tree / "README.md").unlink()
    no_card = repo.commit("no card").id
    (repo.work_tree / "README.md").write_text("my own notes")
    assert_refused(cli(repo.work_tree, "reset", "--hard", v2), "untracked file would be overwritten", "README.md")
    assert repo.head() == no_card and (repo.work_tree / "README.md").read_text() == "my own notes"


def test_restore_files_and_selected_tensors(tmp_path):
    repo = Repository.init(tmp_path / "w")
    m = helpers.lora_model(seed=1)
    v1 = save_commit(repo, m, "v1")
    repo.tag("v1")
    helpers.randomize(m, 5)
    save_commit(repo, m, "v2")
    weights = repo.work_tree / "adapter_model.safetensors"
    helpers.edit_tensor(weights, "layers.1.self_attn.v_proj.lora_A")  # uncommitted, not restored: kept
    kept = load_file(str(weights))[f"{THEIRS}.lora_A.weight"].clone()
    res = repo.restore(source="v1", tensors=["*layers.0.*"])
    assert sorted(res.tensors_restored) == sorted(n for n, _ in repo.show(v1).snapshot.tensors() if "layers.0." in n)
    now = load_file(str(weights))
    old = load_file(str(checkout(repo, v1, "v1") / "adapter_model.safetensors"))
    for name in now:
        if "layers.0." in name:
            assert torch.equal(now[name], old[name])
    assert torch.equal(now[f"{THEIRS}.lora_A.weight"], kept)
    PeftModel.from_pretrained(helpers.tiny_base(), str(repo.work_tree))  # still a valid adapter
    # whole files, by path
    (repo.work_tree / "adapter_config.json").write_text("{}")
    out = json.loads(ok(cli(repo.work_tree, "restore", "--source", "v1", "adapter_config.json", "--json")).stdout)
    assert out["files"] == ["adapter_config.json"]
    assert helpers.sha256(repo.work_tree / "adapter_config.json") == \
        helpers.sha256(checkout(repo, v1, "v1b") / "adapter_config.json")


def test_reflog_expiry_lets_gc_reclaim_exactly_a_deleted_branch(tmp_path):
    work = tmp_path / "w"
    Repository.init(work)
    write_adapter(work, seed=0, rank=32, dim=256)
    ok(cli(work, "commit", "-m", "base"))
    repo = Repository(work)
    before = set(repo.store.iter_ids())
    ok(cli(work, "switch", "-c", "scratch"))
    write_adapter(work, seed=1, rank=32, dim=256)
    ok(cli(work, "commit", "-m", "scratch"))
    added = set(repo.store.iter_ids()) - before
    sizes = sum(repo.store.size(oid) for oid in added)
    ok(cli(work, "switch", "main"))
    ok(cli(work, "branch", "-d", "scratch"))
    assert json.loads(ok(cli(work, "gc", "--grace", "0", "--json")).stdout)["removed"] == []  # the reflog keeps it
    dry = json.loads(ok(cli(work, "reflog", "expire", "--expire-unreachable=now", "--all", "-n", "--json")).stdout)
    assert dry["dry_run"] and dry["dropped"] > 0
    assert json.loads(ok(cli(work, "gc", "--grace", "0", "--json")).stdout)["removed"] == []
    ok(cli(work, "reflog", "expire", "--expire-unreachable=now", "--all"))
    report = json.loads(ok(cli(work, "gc", "--grace", "0", "--json")).stdout)
    assert set(report["removed"]) == added and report["bytes_freed"] == sizes and sizes > 200_000
    assert set(repo.store.iter_ids()) == before
    assert "refs/heads/scratch" not in repo.refs.reflog_refs()
    assert repo.refs.reflog("refs/heads/main")  # reachable entries stay
    ok(cli(work, "fsck"))


def test_gc_applies_git_default_expiry(tmp_path):
    """Entries older than 30 days naming commits nothing reaches are dropped by gc itself."""
    import time

    from adaptvc.storage.base import ReflogEntry

    work = tmp_path / "w"
    repo = Repository.init(work)
    write_adapter(work, seed=0)
    repo.commit("base")
    repo.switch("old", create=True)
    write_adapter(work, seed=1)
    old = repo.commit("old").id
    repo.switch("main")
    repo.delete_branch("old")
    month = time.time() - 31 * 86400
    for ref in ["HEAD", *repo.refs.reflog_refs()]:
        entries = repo.refs.reflog(ref)
        repo.refs.rewrite_reflog(ref, [ReflogEntry(e.ref, e.old, e.new, month, e.message) for e in entries])
    report = repo.gc(grace_seconds=0)
    assert old in report.removed and not repo.store.has(old)


def test_quickstart_checkout_inside_the_work_tree_is_not_captured(tmp_path):
    work = tmp_path / "w"
    Repository.init(work)
    helpers.lora_model(seed=1).save_pretrained(work)
    ok(cli(work, "commit", "-m", "v1"))
    ok(cli(work, "tag", "v1"))
    res = ok(cli(work, "checkout", "v1", "-o", "serve/"))
    assert "serve" in res.stderr + res.stdout and "exclude" in res.stderr + res.stdout
    assert "/serve/" in (work / ".adaptvc" / "info" / "exclude").read_text()
    assert (work / "serve" / "adapter_config.json").is_file()
    st = json.loads(ok(cli(work, "status", "--json")).stdout)
    assert st["clean"], st
    m = helpers.lora_model(seed=1)
    helpers.randomize(m, 3, only="q_proj")
    m.save_pretrained(work)
    ok(cli(work, "commit", "-m", "v2"))
    assert not [f.path for f in Repository(work).show("HEAD").snapshot.files if f.path.startswith("serve/")]
    # .adaptvcignore (gitignore syntax) leaves out a sub-adapter; '!' brings one back
    helpers.lora_model(seed=2).save_pretrained(work / "scratch")
    helpers.lora_model(seed=2).save_pretrained(work / "keep")
    (work / ".adaptvcignore").write_text("# sub-adapters not to version\n*/\n!keep/\n")
    files = [f.path for f in Repository(work).worktree_snapshot().files]
    assert "keep/adapter_config.json" in files and not [f for f in files if f.startswith(("scratch/", "serve/"))]


# -- hostile input -------------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    work = tmp_path / "w"
    Repository.init(work)
    write_adapter(work, seed=0)
    ok(cli(work, "commit", "-m", "one"))
    ok(cli(work, "tag", "v1"))
    write_adapter(work, seed=1)
    ok(cli(work, "commit", "-m", "two"))
    return work


@pytest.mark.parametrize("args,needle", [
    (["merge", "nope"], "bad revision"),
    (["merge", "HEAD", "--weights", "1,2"], "lossy"),
    (["merge", "HEAD", "--strategy", "ties"], "needs --density"),
    (["merge", "HEAD", "--strategy", "svd", "--weights", "1,x"], "two numbers"),
    (["merge-base", "HEAD", "nope"], "bad revision"),
    (["revert", "v1~5"], "bad revision"),
    (["revert", "HEAD", "-m", "2"], "-m 2"),
    (["reset", "--hard", "nope"], "bad revision"),
    (["restore", "--source", "v1", "../outside"], "outside the work tree"),
    (["restore", "--source", "v1", "train.py"], "not an adapter file"),
    (["restore", "--source", "v1", ".adaptvc/config.json"], "inside the repository"),
    (["restore", "--source", "v1", "*.bin"], "matches no file"),
    (["restore", "--source", "v1", "--tensor", "*no_such_tensor*"], "matches no tensor"),
    (["restore"], "needs a PATH"),
    (["show", "v1:nope.json"], "is not a file of v1"),
    (["show", "v1:../../etc/passwd"], "is not a file"),
    (["show", "v1", "--tensor", "zzz"], "is not in v1"),
    (["reflog", "expire", "--expire=someday", "--all"], "not understood"),
    (["reflog", "expire"], "needs --all"),
    (["reflog", "expire", "no-such-branch"], "has no reflog"),
    (["ls-remote", "nowhere"], "no remote named"),
    (["log", "--all", "v1"], None),
], ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_hostile_arguments_are_one_line_refusals(small, args, needle):
    before = work_files(small)
    res = cli(small, *args)
    if needle is None:
        assert res.exit_code == 2  # a usage error
    else:
        assert_refused(res, needle)
    assert work_files(small) == before


@pytest.mark.parametrize("args", [
    [b"merge", b"\xff\xfe"], [b"reset", b"--hard", b"v\xff"], [b"restore", b"--source", b"v1", b"\xffx"],
    [b"restore", b"--tensor", b"\xff*"], [b"revert", b"\xff"], [b"merge-base", b"HEAD", b"\xff"],
    [b"show", b"v1:\xff"], [b"show", b"v1", b"--tensor", b"\xff"], [b"reflog", b"expire", b"--expire=\xff", b"--all"],
    [b"merge", b"v1", b"--ours", b"\xff"], [b"ls-remote", b"\xff"],
], ids=lambda a: a[0].decode())
def test_non_utf8_arguments_are_refused_in_one_line(small, args):
    res = proc(small, *args)
    err = res.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and res.returncode in (1, 2), err
    assert err.strip().splitlines()[-1].startswith(("Error: ", "Usage:")) or "Error:" in err


def test_odd_ignore_files_warn_or_refuse_in_one_line(small):
    ignore = small / ".adaptvcignore"
    ignore.write_text("a*a*a*a*a*b/\n[z-a]/\n!\nok/\n")  # too many '*' (slow matching), bad range, invalid
    res = cli(small, "status")
    assert res.exit_code == 0, res.stderr
    warnings = {line for line in res.stderr.splitlines() if line.startswith("warning: ")}
    assert len(warnings) == 3 and all("pattern skipped" in w for w in warnings), res.stderr
    ignore.write_text("x" * 5000 + "\n")
    assert "longer than" in cli(small, "status").stderr
    ignore.write_bytes(b"\xff\xfe/\n")
    assert_refused(cli(small, "status"), ".adaptvcignore is not valid UTF-8")
    ignore.write_bytes(b"#" * (2 << 20))
    assert_refused(cli(small, "status"), "larger than 1,048,576 bytes")
    ignore.unlink()
    os.symlink("/etc/passwd", ignore)
    assert_refused(cli(small, "commit", "-m", "x", "--allow-empty"), "symbolic link")
