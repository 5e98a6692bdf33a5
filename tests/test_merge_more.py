"""merge and reset paths that tests/test_merge.py leaves out: ``dare_ties``, ``--allow-unrelated``, ``reset
--mixed``, LoHa/LoKr conflicts resolved by ``--strategy ours|theirs`` and the ``merge --json`` conflict output.

Real PEFT adapters on the tiny Llama of ``tests/helpers.py``; every number against a float64 reference made
with PEFT's own code (``peft.utils.merge_utils``, ``get_delta_weight``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from adaptvc import Repository
from adaptvc.ops.merge import MergeConflictError
from tests import helpers
from tests.light import assert_refused, cli, ok
from tests.test_merge import (
    BOTH,
    OURS,
    SAME,
    THEIRS,
    checkout,
    delta,
    dense,
    peft_layers,
    rel,
    save_commit,
    three_way,
    work_files,
)

P = "base_model.model.model.layers"


def blobs(repo: Repository, rev: str, module: str) -> dict[str, str]:
    """{tensor name: blob id} of one module's tensors in ``rev``."""
    return {n: t.blob for n, t in repo.show(rev).snapshot.tensors() if n.startswith(module + ".")}


def best_rank(w: np.ndarray, rank: int) -> np.ndarray:
    """The best rank-``rank`` approximation of ``w`` (Eckart–Young), dense float64."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vt[:rank]


# -- 1. dare_ties ---------------------------------------------------------------------------------------------
def test_dare_ties_is_peft_dare_ties_of_the_task_vectors_seeded_and_recorded(tmp_path):
    from peft.utils import merge_utils

    repo, ids = three_way(tmp_path)
    args = ["merge", "chat", "--strategy", "dare_ties", "--density", "0.5", "--weights", "0.6,0.4", "--json"]
    out = json.loads(ok(cli(repo.work_tree, *args, "--seed", "7")).stdout)
    assert out["strategy"] == "dare_ties" and out["parents"] == [ids["ours"], ids["theirs"]]
    assert out["modules"] == {"unchanged": [SAME], "ours": [OURS], "theirs": [THEIRS], "combined": [BOTH]}
    first = repo.show("HEAD")
    info = first.commit.metadata["merge"]
    assert info["strategy"] == "dare_ties" and info["base"] == ids["base"]
    assert info["weights"] == [0.6, 0.4] and info["density"] == 0.5 and info["seed"] == 7
    assert "rank" not in info and info["combined"][BOTH]["rank"] == 4  # no --rank: the inputs' rank (4)
    for module, side in ((OURS, "ours"), (THEIRS, "theirs"), (SAME, "base")):  # one-side units: the very blobs
        assert blobs(repo, "HEAD", module) == blobs(repo, ids[side], module)

    # the reference: PEFT's dare_ties on the two task vectors (float64), seeded as documented in lossy_combine
    co = {k: dense(checkout(repo, ids[k], k) / "adapter_model.safetensors") for k in ("base", "ours", "theirs")}
    o = delta(co["base"], BOTH, 2.0)
    tasks = [torch.from_numpy(delta(co[k], BOTH, 2.0) - o) for k in ("ours", "theirs")]
    w = torch.tensor([0.6, 0.4], dtype=torch.float64)

    def reference(seed: int) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return o + merge_utils.dare_ties(tasks, w, 0.5).numpy()

    want, other = reference(7), reference(8)
    assert rel(other, want) > 0.1  # the seed matters: the test below can tell one pruning from another
    sigma = np.linalg.svd(want, compute_uv=False)
    optimum = float(np.sqrt(np.sum(sigma[4:] ** 2)) / np.linalg.norm(want))
    got = dense(checkout(repo, "HEAD", "merged") / "adapter_model.safetensors")
    assert got[f"{BOTH}.lora_A.weight"].shape == (4, 32) and got[f"{BOTH}.lora_B.weight"].shape == (32, 4)
    assert rel(delta(got, BOTH, 2.0), best_rank(want, 4)) < 1e-6  # = the best rank-4 form of PEFT's result
    assert rel(delta(got, BOTH, 2.0), best_rank(other, 4)) > 0.1
    assert abs(info["combined"][BOTH]["residual"] - optimum) < 1e-6 and optimum > 0.05
    model = PeftModel.from_pretrained(helpers.tiny_base(), str(checkout(repo, "HEAD", "merged2"))).double().eval()
    with torch.no_grad():
        peft_delta = peft_layers(model)[BOTH].get_delta_weight("default").numpy()
    assert abs(rel(peft_delta, want) - info["combined"][BOTH]["residual"]) < 1e-6  # what PEFT loads

    # the same seed gives the same bytes; another seed, other bytes (and is recorded)
    ok(cli(repo.work_tree, "reset", "--hard", ids["ours"]))
    ok(cli(repo.work_tree, *args, "--seed", "7"))
    again = repo.show("HEAD")
    assert again.snapshot.id == first.snapshot.id
    ok(cli(repo.work_tree, "reset", "--hard", ids["ours"]))
    ok(cli(repo.work_tree, *args, "--seed", "8"))
    assert repo.show("HEAD").commit.metadata["merge"]["seed"] == 8
    new, old = blobs(repo, "HEAD", BOTH), blobs(repo, first.commit.id, BOTH)
    assert set(new) == set(old) and all(new[n] != old[n] for n in new)
    got8 = dense(checkout(repo, "HEAD", "merged8") / "adapter_model.safetensors")
    assert rel(delta(got8, BOTH, 2.0), best_rank(other, 4)) < 1e-6


# -- 2. --allow-unrelated -----------------------------------------------------------------------------------
def test_unrelated_histories_are_refused_unless_allowed_then_merged_against_an_empty_adapter(tmp_path):
    repo = Repository.init(tmp_path / "w")
    ours = save_commit(repo, helpers.lora_model(seed=1), "ours: q_proj, v_proj")
    # another line of history with no common ancestor: a root commit on a new branch (k_proj instead of v_proj)
    other = tmp_path / "other"
    helpers.lora_model(seed=2, targets=("q_proj", "k_proj")).save_pretrained(other)
    files = {p: (other / p).read_bytes() for p in ("adapter_config.json", "adapter_model.safetensors")}
    theirs = repo.record("theirs: q_proj, k_proj", files, parents=[], branch="other").id
    assert repo.show(theirs).commit.parents == ()
    assert repo.head() == ours
    assert_refused(cli(repo.work_tree, "merge-base", "HEAD", "other"), "no common ancestor")

    objects, before, reflog = set(repo.store.iter_ids()), work_files(repo.work_tree), repo.refs.reflog("HEAD")
    line = assert_refused(cli(repo.work_tree, "merge", "other"), "refusing to merge unrelated histories",
                          "--allow-unrelated")
    assert "other" in line
    assert repo.head() == ours and set(repo.store.iter_ids()) == objects and work_files(repo.work_tree) == before
    assert repo.refs.reflog("HEAD") == reflog
    assert_refused(cli(repo.work_tree, "merge", "other", "--json"), "unrelated histories")
    assert repo.head() == ours and set(repo.store.iter_ids()) == objects

    out = json.loads(ok(cli(repo.work_tree, "merge", "other", "--allow-unrelated", "--json")).stdout)
    q = [f"{P}.{i}.self_attn.q_proj" for i in (0, 1)]
    v = [f"{P}.{i}.self_attn.v_proj" for i in (0, 1)]
    k = [f"{P}.{i}.self_attn.k_proj" for i in (0, 1)]
    assert out["merge_base"] is None and out["parents"] == [ours, theirs] and out["conflicts"] == []
    # against an empty adapter every unit is "changed": one-sided ones are taken, shared ones added
    assert out["modules"] == {"unchanged": [], "ours": v, "theirs": k, "combined": q}
    merged = repo.show("HEAD")
    assert merged.commit.parents == (ours, theirs) and merged.commit.metadata["merge"]["base"] is None
    for module in v:
        assert blobs(repo, "HEAD", module) == blobs(repo, ours, module)
    for module in k:
        assert blobs(repo, "HEAD", module) == blobs(repo, theirs, module)
    assert all(merged.commit.metadata["merge"]["combined"][m] == {"exact": True, "residual": 0.0, "rank": 8}
               for m in q)
    assert merged.snapshot.file("README.md") == repo.show(ours).snapshot.file("README.md")  # ours alone has it

    a = dense(checkout(repo, ours, "a") / "adapter_model.safetensors")
    b = dense(other / "adapter_model.safetensors")
    target = checkout(repo, "HEAD", "merged")
    got = dense(target / "adapter_model.safetensors")
    for m in q:  # ΔW_ours + ΔW_theirs − 0: the two factor sets side by side, nothing negated, bit for bit
        assert np.array_equal(got[f"{m}.lora_A.weight"], np.concatenate([a[f"{m}.lora_A.weight"],
                                                                          b[f"{m}.lora_A.weight"]]))
        assert np.array_equal(got[f"{m}.lora_B.weight"], np.concatenate([a[f"{m}.lora_B.weight"],
                                                                          b[f"{m}.lora_B.weight"]], axis=1))
    cfg = json.loads((target / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["k_proj", "q_proj", "v_proj"]
    assert cfg["rank_pattern"] == {m.removeprefix("base_model.model."): 8 for m in q}
    reference = {**{m: delta(a, m, 2.0) + delta(b, m, 2.0) for m in q}, **{m: delta(a, m, 2.0) for m in v},
                 **{m: delta(b, m, 2.0) for m in k}}
    model = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).double().eval()
    with torch.no_grad():
        layers = peft_layers(model)
        assert set(layers) == set(reference)
        for module, layer in layers.items():
            assert rel(layer.get_delta_weight("default").numpy(), reference[module]) < 1e-13, module
    assert repo.status().clean and repo.head() == out["id"]


# -- 3. reset --mixed ---------------------------------------------------------------------------------------
def test_reset_mixed_moves_the_branch_and_keeps_the_work_tree(tmp_path):
    repo = Repository.init(tmp_path / "w")
    m = helpers.lora_model(seed=1)
    v1 = save_commit(repo, m, "v1")
    repo.tag("v1")
    helpers.randomize(m, 5, only="layers.0.self_attn.q_proj")
    m.save_pretrained(repo.work_tree)
    cfg = json.loads((repo.work_tree / "adapter_config.json").read_text())
    (repo.work_tree / "adapter_config.json").write_text(json.dumps({**cfg, "lora_dropout": 0.1}, indent=2))
    v2 = repo.commit("v2").id
    (repo.work_tree / "train.py").write_text("print('mine')\n")  # untracked
    before = work_files(repo.work_tree)

    res = cli(repo.work_tree, "reset", "v1~0")  # no mode: --mixed
    ok(res)
    assert f"main is now at {v1[:12]}" in res.stdout and f"(was {v2[:12]})" in res.stdout
    assert "the work tree is unchanged" in res.stdout
    assert repo.head() == v1 and repo.refs.read("refs/heads/main") == v1
    assert work_files(repo.work_tree) == before  # not one byte of the work tree was written
    entry = repo.refs.reflog("refs/heads/main")[0]
    assert (entry.old, entry.new, entry.message) == (v2, v1, "reset: moving to v1~0")
    st = repo.status()
    # the work tree holds v2: against v1 it shows exactly what v2 changed
    assert st.modified == [f"{BOTH}.lora_A.weight", f"{BOTH}.lora_B.weight"] and st.added == st.removed == []
    assert st.config_keys == ["lora_dropout"] and "adapter_model.safetensors" in st.files_modified
    mixed = st.to_dict()
    # committing now records v2's snapshot again: the branch moved, nothing else did
    assert repo.commit("v2 again").snapshot == repo.show(v2).snapshot.id

    # --soft is the same move (no staging area); --json says which mode ran
    out = json.loads(ok(cli(repo.work_tree, "reset", "--soft", v1, "--json")).stdout)
    assert out["mode"] == "soft" and out["new"] == v1 and work_files(repo.work_tree) == before
    assert repo.status().to_dict() == mixed
    out = json.loads(ok(cli(repo.work_tree, "reset", "--mixed", v2, "--json")).stdout)
    assert out == {"ref": "refs/heads/main", "old": v1, "new": v2, "mode": "mixed"}
    assert repo.status().clean and work_files(repo.work_tree) == before
    # --hard rewrites the tracked files (and only those)
    ok(cli(repo.work_tree, "reset", "--hard", v1))
    assert repo.status().clean
    after = work_files(repo.work_tree)
    assert after["train.py"] == before["train.py"]
    assert {p: h for p, h in after.items() if p != "train.py"} == work_files(checkout(repo, v1, "v1"))


# -- 4. LoHa / LoKr ----------------------------------------------------------------------------------------
def lycoris_model(kind: str, seed: int = 1, changes: tuple[tuple[str, int], ...] = ()):
    """A real LoHa or LoKr adapter on the tiny Llama, every factor random (PEFT zeroes some), then the modules
    named in ``changes`` given other values."""
    from peft import LoHaConfig, LoKrConfig, get_peft_model

    config = {"loha": LoHaConfig, "lokr": LoKrConfig}[kind](r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(helpers.tiny_base(), config)
    for only, s in (("", seed), *changes):
        g = torch.Generator().manual_seed(s)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ("hada_" in name or "lokr_" in name) and only in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def lycoris_three_way(tmp_path: Path, kind: str) -> tuple[Repository, dict[str, str]]:
    """The shape of tests.test_merge.three_way with LoHa/LoKr: BOTH changed on both sides."""
    repo = Repository.init(tmp_path / "w")
    ids = {"base": save_commit(repo, lycoris_model(kind), "base")}
    repo.switch("chat", create=True)
    ids["theirs"] = save_commit(repo, lycoris_model(kind, changes=(("layers.0.self_attn.q_proj", 11),
                                                                   ("layers.1.self_attn.v_proj", 12))), "chat")
    repo.switch("main")
    ids["ours"] = save_commit(repo, lycoris_model(kind, changes=(("layers.0.self_attn.q_proj", 21),
                                                                 ("layers.1.self_attn.q_proj", 22))), "code")
    return repo, ids


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_loha_lokr_changed_on_both_sides_conflict_and_a_strategy_takes_one_side(tmp_path, kind):
    repo, ids = lycoris_three_way(tmp_path, kind)
    head, objects, before = repo.head(), set(repo.store.iter_ids()), work_files(repo.work_tree)
    with pytest.raises(MergeConflictError) as err:
        repo.merge("chat")
    res = err.value.result
    assert [(c.name, c.kind, c.reason) for c in res.conflicts] == \
        [(BOTH, "module", "LoHa/LoKr factors are not additive")]
    assert res.id is None and res.ours == (OURS,) and res.theirs == (THEIRS,) and res.combined == ()
    assert f"{BOTH} (LoHa/LoKr factors are not additive)" in str(err.value)
    assert repo.head() == head and set(repo.store.iter_ids()) == objects and work_files(repo.work_tree) == before

    expected = {"loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}, "lokr": {"lokr_w1", "lokr_w2"}}[kind]
    assert {n.rpartition(".")[2] for n in blobs(repo, ids["ours"], BOTH)} == expected
    for strategy in ("theirs", "ours"):
        ok(cli(repo.work_tree, "reset", "--hard", ids["ours"]))
        out = json.loads(ok(cli(repo.work_tree, "merge", "chat", "--strategy", strategy, "--json")).stdout)
        assert out["conflicts"] == [] and out["modules"]["combined"] == []
        assert out["modules"][strategy] == sorted([BOTH, OURS if strategy == "ours" else THEIRS])
        assert repo.show("HEAD").commit.parents == (ids["ours"], ids["theirs"])
        for module, side in ((BOTH, strategy), (OURS, "ours"), (THEIRS, "theirs"), (SAME, "base")):
            assert blobs(repo, "HEAD", module) == blobs(repo, ids[side], module), (strategy, module)
        # byte for byte in the files PEFT reads, and PEFT's ΔW of that module is the chosen side's
        target = checkout(repo, "HEAD", f"merged-{strategy}")
        side = checkout(repo, ids[strategy], strategy)
        got = load_file(str(target / "adapter_model.safetensors"))
        want = load_file(str(side / "adapter_model.safetensors"))
        for n in want:
            if n.startswith(BOTH + "."):
                assert torch.equal(got[n], want[n]) and got[n].dtype == want[n].dtype, n
        merged = PeftModel.from_pretrained(helpers.tiny_base(), str(target)).eval()
        chosen = PeftModel.from_pretrained(helpers.tiny_base(), str(side)).eval()
        with torch.no_grad():
            layer = dict(merged.named_modules())[BOTH]
            ref = dict(chosen.named_modules())[BOTH]
            assert torch.equal(layer.get_delta_weight("default"), ref.get_delta_weight("default"))
            assert layer.get_delta_weight("default").abs().max() > 0
        assert repo.status().clean


# -- 5. merge --json on a conflict ----------------------------------------------------------------------------
def test_merge_json_on_a_conflict_lists_every_unit_and_exits_1(tmp_path):
    repo, ids = lycoris_three_way(tmp_path, "loha")
    # a config key changed differently on both sides too: two conflicts, of two kinds
    for branch, dropout in (("chat", 0.2), ("main", 0.1)):
        repo.switch(branch)
        cfg = json.loads((repo.work_tree / "adapter_config.json").read_text())
        (repo.work_tree / "adapter_config.json").write_text(json.dumps({**cfg, "module_dropout": dropout}))
        ids["theirs" if branch == "chat" else "ours"] = repo.commit(f"module_dropout {dropout}").id
    head, objects, before = repo.head(), set(repo.store.iter_ids()), work_files(repo.work_tree)

    res = cli(repo.work_tree, "merge", "chat", "--json")
    line = assert_refused(res, "merge conflict in 2 place(s)", f"{BOTH} (LoHa/LoKr factors are not additive)",
                          "adapter_config.json:module_dropout", "nothing was written")
    assert res.exit_code == 1 and line.startswith("Error: ")
    out = json.loads(res.stdout)
    assert out == {"id": None, "parents": [ids["ours"], ids["theirs"]], "merge_base": ids["base"],
                   "fast_forward": False, "strategy": "combine",
                   "modules": {"unchanged": [SAME], "ours": [OURS], "theirs": [THEIRS], "combined": []},
                   "conflicts": [{"name": BOTH, "kind": "module", "reason": "LoHa/LoKr factors are not additive"},
                                 {"name": "adapter_config.json:module_dropout", "kind": "config",
                                  "reason": "changed on both sides: 0.0 -> 0.1 / 0.2"}]}
    assert repo.head() == head and set(repo.store.iter_ids()) == objects and work_files(repo.work_tree) == before
    # without --json: one CONFLICT line per unit on stderr, then the error line; nothing on stdout
    res = cli(repo.work_tree, "merge", "chat")
    assert res.exit_code == 1 and res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"CONFLICT (module): {BOTH}: LoHa/LoKr factors are not additive",
        "CONFLICT (config): adapter_config.json:module_dropout: changed on both sides: 0.0 -> 0.1 / 0.2",
        line]
    assert repo.head() == head and set(repo.store.iter_ids()) == objects and work_files(repo.work_tree) == before
    # naming both units resolves the merge
    ok(cli(repo.work_tree, "merge", "chat", "--theirs", BOTH, "--ours", "adapter_config.json:module_dropout"))
    assert blobs(repo, "HEAD", BOTH) == blobs(repo, ids["theirs"], BOTH)
    assert json.loads((repo.work_tree / "adapter_config.json").read_text())["module_dropout"] == 0.1
