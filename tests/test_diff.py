"""Every number of `adaptvc diff`, checked against a dense float64 reference on real PEFT adapters."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from adaptvc import Repository
from adaptvc.cli.main import cli
from adaptvc.errors import ChecksumMismatchError
from tests import helpers
from tests.light import corrupt_stored

TENSOR_KEYS = {"name", "status", "dtype_a", "dtype_b", "shape_a", "shape_b", "norm_a", "norm_b", "delta_norm",
               "rel_delta", "cosine", "max_abs_delta"}
MODULE_KEYS = {"name", "rank_a", "rank_b", "delta_w_norm_a", "delta_w_norm_b", "delta_w_change",
               "delta_w_rel_change", "delta_w_cosine"}


def dense(path) -> dict[str, np.ndarray]:
    return {k: v.to(torch.float64).numpy() for k, v in load_file(str(path)).items()}


def reference_tensor(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    d = np.linalg.norm(b - a)
    return {"norm_a": na, "norm_b": nb, "delta_norm": d, "rel_delta": d / na if na else None,
            "cosine": float(np.sum(a * b) / (na * nb)) if na and nb else None,
            "max_abs_delta": float(np.max(np.abs(b - a)))}


def reference_module(ta, tb, module: str, s_a: float, s_b: float) -> dict[str, float]:
    wa = s_a * ta[f"{module}.lora_B.weight"] @ ta[f"{module}.lora_A.weight"]  # d_out × d_in, on purpose
    wb = s_b * tb[f"{module}.lora_B.weight"] @ tb[f"{module}.lora_A.weight"]
    na, nb, ch = np.linalg.norm(wa), np.linalg.norm(wb), np.linalg.norm(wb - wa)
    return {"delta_w_norm_a": na, "delta_w_norm_b": nb, "delta_w_change": ch, "delta_w_rel_change": ch / na,
            "delta_w_cosine": float(np.sum(wa * wb) / (na * nb))}


def close(got, want, rtol=1e-9, atol=1e-12) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=rtol, abs_tol=atol)


def check_against_reference(result: dict, path_a, path_b, scale_a: float, scale_b: float, rtol=1e-9):
    ta, tb = dense(path_a), dense(path_b)
    for t in result["tensors"]:
        assert set(t) >= TENSOR_KEYS
        if t["status"] == "modified" and t["shape_a"] == t["shape_b"]:
            ref = reference_tensor(ta[t["name"]], tb[t["name"]])
            for key, want in ref.items():
                assert close(t[key], want, rtol), (t["name"], key, t[key], want)
        elif t["status"] == "unchanged":
            assert np.array_equal(ta[t["name"]], tb[t["name"]])
    for m in result["modules"]:
        assert set(m) >= MODULE_KEYS
        ref = reference_module(ta, tb, m["name"], scale_a, scale_b)
        for key, want in ref.items():
            assert close(m[key], want, rtol), (m["name"], key, m[key], want)
    return ta, tb


def commit_model(repo: Repository, model, message: str) -> tuple[str, str]:
    model.save_pretrained(repo.work_tree)
    c = repo.commit(message)
    out = repo.work_tree.parent / f"co-{c.id[:8]}"
    repo.checkout(c.id, out)
    return c.id, str(out / "adapter_model.safetensors")


@pytest.fixture
def repo(tmp_path):
    return Repository.init(tmp_path / "w")


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_same_rank_numbers_match_dense_reference(repo, dtype):
    model = helpers.lora_model(seed=1, r=4, dtype=dtype)
    a, pa = commit_model(repo, model, "a")
    helpers.randomize(model, seed=2, only="q_proj")  # q changes in both factors, v stays
    b, pb = commit_model(repo, model, "b")
    result = repo.diff(a, b).to_dict()
    assert (result["a"], result["b"]) == (a, b)
    statuses = {t["name"]: t["status"] for t in result["tensors"]}
    assert {s for n, s in statuses.items() if "q_proj" in n} == {"modified"}
    assert {s for n, s in statuses.items() if "v_proj" in n} == {"unchanged"}
    assert len(result["modules"]) == 4
    check_against_reference(result, pa, pb, 2.0, 2.0, rtol=1e-9)
    assert result["summary"]["tensors"] == {"added": 0, "removed": 0, "modified": 4, "unchanged": 4}
    assert result["config"] == {}
    for m in result["modules"]:
        assert m["status"] == ("unchanged" if "v_proj" in m["name"] else "modified")
        if m["status"] == "unchanged":
            assert m["delta_w_change"] == 0.0 and m["delta_w_rel_change"] == 0.0


def test_different_ranks_and_config_changes(repo, tmp_path):
    small = helpers.lora_model(seed=1, r=4)
    a, pa = commit_model(repo, small, "r4")
    big = get_peft_model(helpers.tiny_base(), LoraConfig(r=8, lora_alpha=8, use_rslora=True,
                                                         target_modules=["q_proj", "v_proj"]))
    helpers.randomize(big, seed=5)
    b, pb = commit_model(repo, big, "r8 rslora")
    result = repo.diff(a, b).to_dict()
    assert result["config"]["r"] == [4, 8]
    assert "lora_alpha" not in result["config"]  # 8 in both: only changed keys are listed
    assert result["config"]["use_rslora"] == [False, True]
    assert all((m["rank_a"], m["rank_b"]) == (4, 8) for m in result["modules"])
    for t in result["tensors"]:
        assert t["status"] == "modified" and t["shape_a"] != t["shape_b"] and t["delta_norm"] is None
    check_against_reference(result, pa, pb, 8 / 4, 8 / math.sqrt(8), rtol=1e-9)


def test_rank_and_alpha_patterns_are_honoured(repo):
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
                     alpha_pattern={"layers.1.self_attn.q_proj": 32})
    model = get_peft_model(helpers.tiny_base(), cfg)
    helpers.randomize(model, seed=1)
    a, pa = commit_model(repo, model, "a")
    helpers.randomize(model, seed=2)
    b, pb = commit_model(repo, model, "b")
    result = repo.diff(a, b).to_dict()
    scales = {m["name"].split("layers.")[1]: (m["rank_a"], m["scale_a"]) for m in result["modules"]}
    assert scales == {"0.self_attn.q_proj": (4, 2.0), "0.self_attn.v_proj": (2, 4.0),
                      "1.self_attn.q_proj": (4, 8.0), "1.self_attn.v_proj": (2, 4.0)}
    ta, tb = dense(pa), dense(pb)
    for m in result["modules"]:
        ref = reference_module(ta, tb, m["name"], m["scale_a"], m["scale_b"])
        assert close(m["delta_w_change"], ref["delta_w_change"])
    # the scale PEFT itself uses
    layer = model.base_model.model.model.layers[1].self_attn.q_proj
    assert layer.scaling["default"] == 8.0


def test_tiny_changes_are_measured_precisely(repo):
    """A change far below the size of ΔW must not drown in rounding (no subtraction of squared norms)."""
    model = helpers.lora_model(seed=1)
    a, pa = commit_model(repo, model, "a")
    with torch.no_grad():
        p = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
        p[0, 0] += 1e-6
        p2 = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
        p2[1, 3] -= 1e-6
    b, pb = commit_model(repo, model, "b")
    result = repo.diff(a, b).to_dict()
    m = next(m for m in result["modules"] if m["name"].endswith("layers.0.self_attn.q_proj"))
    ref = reference_module(dense(pa), dense(pb), m["name"], 2.0, 2.0)
    assert 0 < ref["delta_w_change"] < 1e-4 * ref["delta_w_norm_a"]
    assert close(m["delta_w_change"], ref["delta_w_change"], rtol=1e-7)


def test_added_and_removed_tensors_and_worktree(repo):
    a, pa = commit_model(repo, helpers.lora_model(seed=1, targets=("q_proj", "v_proj")), "qv")
    helpers.lora_model(seed=1, targets=("q_proj", "k_proj")).save_pretrained(repo.work_tree)
    result = repo.diff(a, None).to_dict()
    assert result["b"] == "worktree"
    by_status = {}
    for t in result["tensors"]:
        by_status.setdefault(t["status"], []).append(t["name"])
    assert all("k_proj" in n for n in by_status["added"]) and len(by_status["added"]) == 4
    assert all("v_proj" in n for n in by_status["removed"]) and len(by_status["removed"]) == 4
    assert all("q_proj" in n for n in by_status["unchanged"])
    tb = dense(repo.work_tree / "adapter_model.safetensors")
    ta = dense(pa)
    for t in result["tensors"]:
        if t["status"] == "added":
            assert close(t["norm_b"], np.linalg.norm(tb[t["name"]])) and t["norm_a"] is None
        if t["status"] == "removed":
            assert close(t["norm_a"], np.linalg.norm(ta[t["name"]])) and t["shape_b"] is None
    assert {m["name"].rsplit(".", 1)[1] for m in result["modules"]} == {"q_proj"}
    assert result["config"]["target_modules"][0] != result["config"]["target_modules"][1]
    assert result["summary"]["tensors"] == {"added": 4, "removed": 4, "modified": 0, "unchanged": 4}


def test_unchanged_tensors_are_not_read(repo):
    model = helpers.lora_model(seed=1)
    a, _ = commit_model(repo, model, "a")
    helpers.randomize(model, seed=2, only="q_proj")
    b, _ = commit_model(repo, model, "b")
    snap_a = repo.show(a).snapshot
    tensors = dict(snap_a.tensors())
    # corrupt the blob of an unchanged tensor that belongs to no changed module: the diff never reads it
    diff = repo.diff(a, b)
    unchanged = [t.name for t in diff.tensors if t.status == "unchanged"]
    mod_unchanged = {m.name for m in diff.modules if m.status == "unchanged"}
    victim = next(n for n in unchanged if "v_proj.lora_B" in n)
    corrupt_stored(repo.store, tensors[victim].blob, zero=True)
    without_modules = repo.diff(a, b, tensors="lora_B")  # lora_B only: tensor numbers, no module numbers
    assert victim in {t.name for t in without_modules.tensors if t.status == "unchanged"}
    assert mod_unchanged  # module numbers for unchanged modules do read their factors...
    with pytest.raises(ChecksumMismatchError):  # ...and a corrupt blob is an error, never a wrong number
        repo.diff(a, b)


def test_non_lora_adapters_get_tensor_numbers(repo, tmp_path):
    model = get_peft_model(helpers.tiny_base(), IA3Config(target_modules=["k_proj", "down_proj"],
                                                          feedforward_modules=["down_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "ia3_" in n:
                p.add_(0.1)
    a, pa = commit_model(repo, model, "ia3 a")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "ia3_" in n:
                p.mul_(1.5)
    b, pb = commit_model(repo, model, "ia3 b")
    result = repo.diff(a, b).to_dict()
    assert result["modules"] == []
    assert result["summary"]["tensors"]["modified"] == 4
    check_against_reference(result, pa, pb, 1.0, 1.0)
    res = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "diff", a, b, "--modules"])
    assert res.exit_code == 1 and "no LoRA modules" in res.stderr and "IA3" in res.stderr


def test_dora_magnitudes_get_tensor_numbers_and_lora_part_module_numbers(repo):
    model = get_peft_model(helpers.tiny_base(), LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                           target_modules=["q_proj"]))
    helpers.randomize(model, seed=1)
    a, pa = commit_model(repo, model, "a")
    helpers.randomize(model, seed=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "magnitude" in n:
                p.mul_(1.1)
    b, pb = commit_model(repo, model, "b")
    result = repo.diff(a, b).to_dict()
    mags = [t for t in result["tensors"] if "magnitude" in t["name"]]
    assert mags and all(t["status"] == "modified" and t["rel_delta"] is not None for t in mags)
    assert len(result["modules"]) == 2
    check_against_reference(result, pa, pb, 2.0, 2.0)


def test_fp8_and_fp16_tensors_are_compared_without_torch_conversion(tmp_path):
    """Per-tensor numbers for dtypes a LoRA file may hold, against torch's own conversion."""
    from adaptvc.tensors.dtypes import to_float64

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=g)
    for dtype, name in [(torch.bfloat16, "BF16"), (torch.float16, "F16"), (torch.float8_e4m3fn, "F8_E4M3"),
                        (torch.float8_e5m2, "F8_E5M2")]:
        t = x.to(dtype)
        raw = t.view(torch.uint8).numpy().tobytes()
        assert np.array_equal(to_float64(raw, name), t.to(torch.float64).numpy()), name


def test_cli_diff_outputs(repo, tmp_path):
    model = helpers.lora_model(seed=1)
    a, _ = commit_model(repo, model, "a")
    repo.tag("v1")
    helpers.randomize(model, seed=2, only="layers.1")
    b, _ = commit_model(repo, model, "b")
    repo.tag("v2")
    work = repo.work_tree

    def run(*args):
        res = CliRunner().invoke(cli, ["-C", str(work), "diff", *args])
        assert res.exit_code == 0, (res.stdout, res.stderr)
        return res.stdout

    data = json.loads(run("v1", "v2", "--json"))
    assert set(data) == {"a", "b", "config", "tensors", "modules", "summary"}
    assert data["summary"]["modules"] == {"compared": 4, "changed": 2}
    text = run("v1", "v2")
    assert f"diff {a[:12]} → {b[:12]}" in text
    assert "2 of 4 modules changed" in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    table_rows = [line for line in lines if "layers." in line]
    assert table_rows[0].startswith("layers.1") and table_rows[1].startswith("layers.1")  # biggest change first
    stat = run("v1", "v2", "--stat").splitlines()
    assert len(stat) == 5 and stat[-1].startswith("4 tensors changed")
    assert all(len(line) <= 80 for line in stat)
    assert "layers.0" not in "".join(stat)
    only = json.loads(run("v1", "v2", "--tensor", "layers.1.*q_proj*", "--json"))
    assert {t["name"].split("layers.")[1][:16] for t in only["tensors"]} == {"1.self_attn.q_pr"}
    assert len(only["tensors"]) == 2
    assert "worktree" in run("v1")  # against the work tree
    assert "0 modified" in run()  # HEAD against an unchanged work tree

    png = tmp_path / "d.png"
    run("v1", "v2", "--plot", str(png))
    blob = png.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", blob[16:24])
    assert width >= 400 and height >= 200

    bad = CliRunner().invoke(cli, ["-C", str(work), "diff", "v1", "nope"])
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: bad revision 'nope'")
    none = CliRunner().invoke(cli, ["-C", str(work), "diff", "v1", "v2", "--tensor", "zzz*"])
    assert none.exit_code == 1 and "no tensor name matches" in none.stderr


def test_sub_folder_adapters_use_their_own_config(repo):
    model = helpers.lora_model(seed=1)
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=16, target_modules=["k_proj"]))
    helpers.randomize(model, seed=3)
    model.save_pretrained(repo.work_tree)
    a = repo.commit("a").id
    pa = dense(repo.work_tree / "second" / "adapter_model.safetensors")
    weights = repo.work_tree / "second" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key] = tensors[key] * 2
    save_file(tensors, str(weights), metadata={"format": "pt"})
    result = repo.diff(a, None).to_dict()
    second = [m for m in result["modules"] if m["name"].startswith("second/")]
    assert len(second) == 2 and all(m["scale_a"] == 8.0 for m in second)
    changed = next(m for m in second if m["status"] == "modified")
    module = changed["name"].removeprefix("second/")
    pb = dense(weights)
    ref = reference_module(pa, pb, module, 8.0, 8.0)
    assert close(changed["delta_w_change"], ref["delta_w_change"])


@pytest.mark.parametrize("config", [
    LoHaConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
    LoKrConfig(r=4, alpha=6, target_modules=["q_proj", "v_proj"]),
    LoKrConfig(r=2, alpha=3, target_modules=["q_proj", "down_proj"], decompose_both=True, decompose_factor=4),
], ids=["loha", "lokr", "lokr-decomposed"])
def test_loha_and_lokr_module_numbers_match_peft_delta_weights(repo, config):
    def model(seed: int):
        m = get_peft_model(helpers.tiny_base(), config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "hada_" in n or "lokr_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        return m

    ma, mb = model(1), model(2)
    a, _ = commit_model(repo, ma, "a")
    b, _ = commit_model(repo, mb, "b")
    result = repo.diff(a, b).to_dict()
    assert len(result["modules"]) == 4
    layers_a = {n: mod for n, mod in ma.named_modules() if hasattr(mod, "get_delta_weight")}
    layers_b = {n: mod for n, mod in mb.named_modules() if hasattr(mod, "get_delta_weight")}
    for m in result["modules"]:
        with torch.no_grad():
            wa = layers_a[m["name"]].get_delta_weight("default").double().numpy()
            wb = layers_b[m["name"]].get_delta_weight("default").double().numpy()
        na, nb, ch = np.linalg.norm(wa), np.linalg.norm(wb), np.linalg.norm(wb - wa)
        assert close(m["delta_w_norm_a"], na, 1e-6) and close(m["delta_w_norm_b"], nb, 1e-6)
        assert close(m["delta_w_change"], ch, 1e-6)
        # PEFT builds its dense reference in float32: compare to that precision
        assert close(m["delta_w_cosine"], float(np.sum(wa * wb) / (na * nb)), 1e-6, 1e-6)
