"""Four first-week bugs a documentation review found, each pinned by a test that failed before its fix.

1. a hostile value in adapter_config.json (``"lora_alpha": "abc"``, an ``alpha_pattern`` list, a non-finite,
   boolean or huge number…) made ``diff`` end in "internal error": now one line naming the key and the version;
2. merge took a reordered set-valued config key (``exclude_modules``…) for a conflict;
3. ``diff --tensor '*q_proj'`` (a leading ``*``) matched nothing: every pattern is matched anywhere in the name;
4. a relative path given after ``-C DIR`` was resolved from the shell's folder, not from DIR (verify-base,
   deployed, demo), unlike git.

Torch-free: numpy adapters, the CLI in-process, real folders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from adaptvc import Repository
from adaptvc.errors import AdaptvcError
from tests.light import PREFIX, assert_refused, cli, ok, write_adapter


def two_versions(tmp_path: Path, config_b: str, write=write_adapter) -> tuple[Repository, str]:
    """v1 with a valid config, v2 the same tensors (seed 2) with ``config_b`` as adapter_config.json's text."""
    repo = Repository.init(tmp_path / "work")
    write(repo.work_tree, seed=1)
    repo.commit("v1")
    repo.tag("v1")
    write(repo.work_tree, seed=2)
    (repo.work_tree / "adapter_config.json").write_text(config_b)
    c = repo.commit("v2")
    repo.tag("v2")
    return repo, c.id


def lora_config(**changes) -> str:
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "org/tiny"}
    cfg.update(changes)
    return json.dumps(cfg)


def loha_adapter(folder: Path, seed: int, config: dict | None = None) -> Path:
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(2):
        p = f"{PREFIX}.{i}.self_attn.q_proj"
        for w in ("hada_w1_a", "hada_w2_a"):
            data[f"{p}.{w}"] = rng.standard_normal((16, 2)).astype("float32")
        for w in ("hada_w1_b", "hada_w2_b"):
            data[f"{p}.{w}"] = rng.standard_normal((2, 16)).astype("float32")
    folder.mkdir(parents=True, exist_ok=True)
    save_file(data, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "LOHA", "r": 2, "alpha": 4, "target_modules": ["q_proj"], **(config or {})}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def adalora_adapter(folder: Path, seed: int, config: dict | None = None) -> Path:
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(2):
        p = f"{PREFIX}.{i}.self_attn.q_proj"
        data[f"{p}.lora_A"] = rng.standard_normal((3, 16)).astype("float32")
        data[f"{p}.lora_B"] = rng.standard_normal((16, 3)).astype("float32")
        data[f"{p}.lora_E"] = rng.standard_normal((3, 1)).astype("float32")
    folder.mkdir(parents=True, exist_ok=True)
    save_file(data, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "ADALORA", "r": 3, "init_r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
           **(config or {})}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


# -- 1: hostile config values --------------------------------------------------------------------------------------
HOSTILE_LORA = {
    "alpha-text": ('"lora_alpha": "abc"', "lora_alpha"),
    "alpha-null": ('"lora_alpha": null', "lora_alpha"),
    "alpha-bool": ('"lora_alpha": true', "lora_alpha"),
    "alpha-huge-int": ('"lora_alpha": 1' + "0" * 400, "lora_alpha"),
    "alpha-overflow": ('"lora_alpha": 1e999', "lora_alpha"),
    "alpha-list": ('"lora_alpha": [8]', "lora_alpha"),
    "alpha-pattern-list": ('"alpha_pattern": [1, 2]', "alpha_pattern"),
    "alpha-pattern-names": ('"alpha_pattern": ["q_proj"]', "alpha_pattern"),
    "alpha-pattern-text": ('"alpha_pattern": "q_proj"', "alpha_pattern"),
    "alpha-pattern-value": ('"alpha_pattern": {"q_proj": "x"}', 'alpha_pattern["q_proj"]'),
    "alpha-pattern-nested": ('"alpha_pattern": {"q_proj": {"a": 1}}', 'alpha_pattern["q_proj"]'),
    "rslora-text": ('"use_rslora": "false"', "use_rslora"),
    "rslora-list": ('"use_rslora": []', "use_rslora"),
}


def hostile(base: dict, field: str) -> str:
    """A config's JSON text with one field replaced by raw JSON text (which json.dumps could not write)."""
    key = field.split(":", 1)[0].strip().strip('"')
    body = json.dumps({k: v for k, v in base.items() if k != key})
    return body[:-1] + ", " + field + "}"


@pytest.mark.parametrize("field,key", HOSTILE_LORA.values(), ids=HOSTILE_LORA.keys())
def test_a_hostile_lora_config_value_is_refused_in_one_line_naming_key_and_version(tmp_path, field, key):
    repo, v2 = two_versions(tmp_path, hostile(json.loads(lora_config()), field))
    line = assert_refused(cli(repo.work_tree, "diff", "v1", "v2"), key, v2[:12], "adapter_config.json")
    assert "internal error" not in line
    assert_refused(cli(repo.work_tree, "diff", "v2", "v1", "--json"), key, v2[:12])
    with pytest.raises(AdaptvcError, match=f"{v2[:12]}.*{key[:13]}"):
        repo.diff("v1", "v2")
    # the work tree (not yet committed) is named as such
    (repo.work_tree / "adapter_config.json").write_text(hostile(json.loads(lora_config()), field))
    assert_refused(cli(repo.work_tree, "diff", "v1"), key, "work tree")


def test_a_hostile_value_in_a_sub_folder_adapter_names_that_config(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1)
    write_adapter(repo.work_tree / "second", seed=3)
    repo.commit("v1")
    write_adapter(repo.work_tree / "second", seed=4)
    (repo.work_tree / "second" / "adapter_config.json").write_text(lora_config(lora_alpha="x"))
    c = repo.commit("v2")
    assert_refused(cli(repo.work_tree, "diff", "HEAD~1", "HEAD"), "second/adapter_config.json", c.id[:12],
                   "lora_alpha")


HOSTILE_LOHA = {
    "r-text": ({"r": "abc"}, "r"),
    "r-null": ({"r": None}, "r"),
    "r-fraction": ({"r": 2.5}, "r"),
    "r-negative": ({"r": -2}, "r"),
    "r-huge": ({"r": 10 ** 30}, "r"),
    "alpha-text": ({"alpha": "abc"}, "alpha"),
    "alpha-bool": ({"alpha": False}, "alpha"),
    "rank-pattern-text": ({"rank_pattern": "x"}, "rank_pattern"),
    "rank-pattern-list": ({"rank_pattern": ["q_proj"]}, "rank_pattern"),
    "rank-pattern-value": ({"rank_pattern": {"q_proj": "2"}}, 'rank_pattern["q_proj"]'),
    "alpha-pattern-list": ({"alpha_pattern": [1, 2]}, "alpha_pattern"),
}


@pytest.mark.parametrize("change,key", HOSTILE_LOHA.values(), ids=HOSTILE_LOHA.keys())
def test_a_hostile_loha_config_value_is_refused(tmp_path, change, key):
    cfg = {"peft_type": "LOHA", "r": 2, "alpha": 4, "target_modules": ["q_proj"], **change}
    repo, v2 = two_versions(tmp_path, json.dumps(cfg), write=loha_adapter)
    assert_refused(cli(repo.work_tree, "diff", "v1", "v2"), key, v2[:12])


HOSTILE_ADALORA = {
    "alpha-text": ({"lora_alpha": "abc"}, "lora_alpha"),
    "alpha-null": ({"lora_alpha": None}, "lora_alpha"),
    "init-r-text": ({"init_r": "abc"}, "init_r"),
    "init-r-bool": ({"init_r": True}, "init_r"),
    "init-r-null": ({"init_r": None}, "init_r"),
}


@pytest.mark.parametrize("change,key", HOSTILE_ADALORA.values(), ids=HOSTILE_ADALORA.keys())
def test_a_hostile_adalora_config_value_is_refused(tmp_path, change, key):
    cfg = {"peft_type": "ADALORA", "r": 3, "init_r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], **change}
    repo, v2 = two_versions(tmp_path, json.dumps(cfg), write=adalora_adapter)
    assert_refused(cli(repo.work_tree, "diff", "v1", "v2"), key, v2[:12])


def test_valid_configs_give_the_numbers_of_a_dense_reference(tmp_path):
    """The checks change no valid number: alpha int or float, rslora, alpha_pattern, a null pattern, and
    LoHa's integral-float r and rank_pattern, against ΔW formed densely in float64."""
    from safetensors.numpy import load_file

    def dense(folder: Path, module: str, s: float) -> np.ndarray:
        t = {k: v.astype(np.float64) for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
        return s * t[f"{module}.lora_B.weight"] @ t[f"{module}.lora_A.weight"]

    q0, v0 = f"{PREFIX}.0.self_attn.q_proj", f"{PREFIX}.0.self_attn.v_proj"
    cases = [({"lora_alpha": 8}, {q0: 2.0, v0: 2.0}),
             ({"lora_alpha": 6.5, "use_rslora": True}, {q0: 6.5 / 2, v0: 6.5 / 2}),
             ({"lora_alpha": 8, "alpha_pattern": {"0.self_attn.q_proj": 12}, "rank_pattern": None,
               "use_rslora": None}, {q0: 3.0, v0: 2.0}),
             ({"lora_alpha": -4, "alpha_pattern": None}, {q0: -1.0, v0: -1.0})]
    for i, (config, scales) in enumerate(cases):
        a = write_adapter(tmp_path / f"a{i}", seed=1, config=config)
        b = write_adapter(tmp_path / f"b{i}", seed=2, config=config)
        repo = Repository.init(tmp_path / f"w{i}")
        for folder, name in ((a, "v1"), (b, "v2")):
            repo.commit(name, source=folder)
            repo.tag(name)
        mods = {m.name: m for m in repo.diff("v1", "v2").modules}
        for module, s in scales.items():
            m = mods[module]
            assert m.scale_a == s and m.scale_b == s
            wa, wb = dense(a, module, s), dense(b, module, s)
            assert math.isclose(m.delta_w_norm_a, np.linalg.norm(wa), rel_tol=1e-10)
            assert math.isclose(m.delta_w_change, np.linalg.norm(wb - wa), rel_tol=1e-10)

    repo = Repository.init(tmp_path / "loha")
    loha_adapter(tmp_path / "l1", 1, {"r": 2.0, "alpha": 4})
    loha_adapter(tmp_path / "l2", 2, {"r": 2, "alpha": 4.0, "rank_pattern": {"1.self_attn.q_proj": 4.0},
                                      "alpha_pattern": {"1.self_attn.q_proj": 6}})
    repo.commit("l1", source=tmp_path / "l1")
    repo.commit("l2", source=tmp_path / "l2")
    mods = {m.name: m for m in repo.diff("HEAD~1", "HEAD").modules}
    assert (mods[f"{PREFIX}.0.self_attn.q_proj"].rank_b, mods[f"{PREFIX}.0.self_attn.q_proj"].scale_b) == (2, 2.0)
    assert (mods[f"{PREFIX}.1.self_attn.q_proj"].rank_b, mods[f"{PREFIX}.1.self_attn.q_proj"].scale_b) == (4, 1.5)
    assert mods[f"{PREFIX}.1.self_attn.q_proj"].scale_a == 2.0


def test_lowrank_scale_functions_refuse_hostile_values_directly():
    from adaptvc.errors import InvalidConfigError
    from adaptvc.tensors.lowrank import adalora_scale, lora_scale, lycoris_rank_and_scale

    assert lora_scale({"lora_alpha": 16}, "m.q_proj", 4) == 4.0
    assert adalora_scale({"lora_alpha": 0, "init_r": 4}, 3) == 3.0 / (4 + 1e-5)  # alpha <= 0: the rank itself
    for config in ({"lora_alpha": "abc"}, {"lora_alpha": math.inf}, {"lora_alpha": math.nan},
                   {"alpha_pattern": [1]}, {"use_rslora": "yes"}, {"lora_alpha": 10 ** 400}):
        with pytest.raises(InvalidConfigError):
            lora_scale(config, "m.q_proj", 4)
    with pytest.raises(InvalidConfigError, match=r"^adapter_config\.json: r "):
        lycoris_rank_and_scale({"r": "x"}, "m.q_proj")


# -- 2: merge of a reordered set-valued config key -----------------------------------------------------------------
@pytest.mark.parametrize("key", ["exclude_modules", "target_parameters", "layers_to_transform"])
def test_a_set_valued_key_reordered_on_one_side_and_changed_on_the_other_merges(tmp_path, key):
    from adaptvc.peft_layout import SET_VALUED_CONFIG_KEYS

    assert key in SET_VALUED_CONFIG_KEYS
    base_value = ["a", "b", "c"] if key != "layers_to_transform" else [0, 1, 2]
    reordered = list(reversed(base_value))
    added = [*base_value, "d" if key != "layers_to_transform" else 3]
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1, config={key: base_value})
    repo.commit("base")
    repo.branch("other")
    write_adapter(repo.work_tree, seed=1, config={key: reordered, "lora_dropout": 0.1})  # ours: a save reorders
    repo.commit("ours")
    repo.switch("other")
    write_adapter(repo.work_tree, seed=1, config={key: added})
    repo.commit("theirs")
    repo.switch("main")
    result = repo.merge("other")
    assert not result.conflicts
    merged = json.loads((repo.work_tree / "adapter_config.json").read_text())
    assert sorted(merged[key]) == sorted(added) and len(merged[key]) == len(added)
    assert merged["lora_dropout"] == 0.1


def test_a_set_valued_key_with_unhashable_elements_is_a_conflict_not_a_crash(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1, config={"exclude_modules": [["a"]]})
    repo.commit("base")
    repo.branch("other")
    write_adapter(repo.work_tree, seed=1, config={"exclude_modules": [["b"]]})
    repo.commit("ours")
    repo.switch("other")
    write_adapter(repo.work_tree, seed=1, config={"exclude_modules": [["c"]]})
    repo.commit("theirs")
    repo.switch("main")
    res = cli(repo.work_tree, "merge", "other")
    assert res.exit_code == 1 and "adapter_config.json:exclude_modules" in res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("bad,key", [({"lora_alpha": "abc"}, "lora_alpha"), ({"lora_alpha": 10 ** 400}, "lora_alpha"),
                                     ({"alpha_pattern": ["q_proj"]}, "alpha_pattern"),
                                     ({"use_rslora": "false"}, "use_rslora")], ids=["text", "huge", "list", "flag"])
def test_merge_refuses_a_hostile_scale_value_before_writing(tmp_path, bad, key):
    """merge read the scale with its own copy of the rule: "abc" merged silently (NaN scale), a huge int was
    an internal error. Now the one rule of diff, refused in one line, nothing written."""
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("base")
    repo.branch("other")
    write_adapter(repo.work_tree, seed=2)
    ours = repo.commit("ours").id
    repo.switch("other")
    write_adapter(repo.work_tree, seed=3, config=bad)
    repo.commit("theirs")
    repo.switch("main")
    assert_refused(cli(repo.work_tree, "merge", "other"), key, "adapter_config.json of their version")
    assert repo.head() == ours


def test_merge_plan_uses_the_lowrank_tensor_name_patterns():
    from adaptvc.ops import merge_plan
    from adaptvc.peft_layout import SET_VALUED_CONFIG_KEYS
    from adaptvc.tensors import lowrank

    assert merge_plan.SET_KEYS is SET_VALUED_CONFIG_KEYS
    assert merge_plan.LORA_TENSOR is lowrank.LORA_TENSOR and merge_plan.LYCORIS_TENSOR is lowrank.LYCORIS_TENSOR


# -- 3: diff --tensor with a leading '*' -----------------------------------------------------------------------------
def test_diff_tensor_patterns_match_anywhere_in_the_name_whatever_they_start_with(tmp_path):
    repo, _ = two_versions(tmp_path, lora_config())

    def names(pattern: str) -> set[str]:
        out = json.loads(ok(cli(repo.work_tree, "diff", "v1", "v2", "--tensor", pattern, "--json")).stdout)
        return {t["name"] for t in out["tensors"]}

    q = {f"{PREFIX}.{i}.self_attn.q_proj.lora_{f}.weight" for i in (0, 1) for f in "AB"}
    assert names("*q_proj") == q                      # leading '*': before, nothing
    assert names("*self_attn.q_proj") == q
    assert names("q_proj") == q                       # no wildcard: a substring, as before
    assert names("layers.1.*q_proj*") == {n for n in q if ".1." in n}
    full = f"{PREFIX}.0.self_attn.q_proj.lora_A.weight"
    assert names(full) == {full}                      # a full name: that tensor
    assert names("*lora_A.weight") == {n for n in q if "lora_A" in n} | {n.replace("q_proj", "v_proj")
                                                                         for n in q if "lora_A" in n}
    assert_refused(cli(repo.work_tree, "diff", "v1", "v2", "--tensor", "*zzz"), "no tensor name matches")
    assert {t.name for t in repo.diff("v1", "v2", tensors="*q_proj").tensors} == q


# -- 4: relative paths after -C ----------------------------------------------------------------------------------------
def base_folder(path: Path, dim: int = 32) -> Path:
    """A base model folder whose q_proj/v_proj weights fit the test adapters (dim × dim)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = {f"model.layers.{i}.self_attn.{m}.weight": np.zeros((dim, dim), np.float32)
               for i in range(2) for m in ("q_proj", "v_proj")}
    save_file(weights, str(path / "model.safetensors"))
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """The shell's folder: not the repository's."""
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)
    return shell


def test_verify_base_resolves_a_relative_base_from_the_C_folder(tmp_path, elsewhere):
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("v1")
    base_folder(tmp_path / "r" / "base")
    out = ok(cli(repo.work_tree, "verify-base", "HEAD", "../base", "--json")).stdout
    assert json.loads(out)["ok"] is True
    base_folder(repo.work_tree.parent / "inside" / "models" / "b")
    ok(cli(repo.work_tree, "verify-base", "HEAD", "../inside/models/b"))
    # the shell's folder is not looked at: a base there, absent from -C's, is not found
    base_folder(elsewhere / "only-here")
    assert_refused(cli(repo.work_tree, "verify-base", "HEAD", "only-here"), "no base model")
    # an absolute path works as before
    ok(cli(repo.work_tree, "verify-base", "HEAD", str(tmp_path / "r" / "base")))


def test_deployed_resolves_dir_from_the_C_folder(tmp_path, elsewhere):
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("v1")
    ok(cli(repo.work_tree, "deploy", "HEAD", "../serve", "--name", "tiny", "-q"))
    assert (tmp_path / "r" / "serve" / "tiny").is_symlink()
    out = json.loads(ok(cli(repo.work_tree, "deployed", "../serve", "--json")).stdout)
    assert [n["name"] for n in out["names"]] == ["tiny"]


@pytest.mark.slow  # the demo command imports torch before it looks at its folder
def test_demo_resolves_its_folder_from_the_C_folder(tmp_path, elsewhere):
    target = tmp_path / "r" / "d"
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("not a demo's")
    (elsewhere / "d").mkdir()
    (elsewhere / "d" / "mine.txt").write_text("not a demo's either")
    assert_refused(cli(tmp_path / "r", "demo", "d"), str(target), "not the folder of an earlier demo")


def test_other_path_arguments_resolve_from_the_C_folder(tmp_path, elsewhere):
    """checkout -o, export, diff --plot, remote add, push to a folder, clone: already right; kept so."""
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("v1")
    write_adapter(repo.work_tree, seed=2)
    repo.commit("v2")
    w = repo.work_tree
    ok(cli(w, "checkout", "HEAD~1", "-o", "../out", "-q"))
    assert (tmp_path / "r" / "out" / "adapter_model.safetensors").is_file()
    ok(cli(w, "export", "HEAD", "../exp", "--name", "tiny", "-q"))
    assert len(list((tmp_path / "r" / "exp").iterdir())) == 1
    ok(cli(w, "diff", "HEAD~1", "HEAD", "--plot", "../d.png"))
    assert (tmp_path / "r" / "d.png").read_bytes()[:4] == b"\x89PNG"
    ok(cli(w, "remote", "add", "origin", "../store"))
    assert Repository(w).remotes()["origin"] == str((tmp_path / "r" / "store").resolve())
    ok(cli(w, "push", "origin", "main"))
    ok(cli(tmp_path / "r", "clone", "store", "cl"))
    assert Repository(tmp_path / "r" / "cl").head() == repo.head()
    assert not any(elsewhere.iterdir())  # nothing was written in the shell's folder


def test_verify_base_takes_a_hub_name_from_the_cache_not_a_folder_of_the_shell(tmp_path, elsewhere, monkeypatch):
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)  # its config names org/tiny
    repo.commit("v1")
    hub = tmp_path / "hub"
    base_folder(hub / "models--org--tiny" / "snapshots" / "abc123")
    (hub / "models--org--tiny" / "refs").mkdir()
    (hub / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    base_folder(elsewhere / "org" / "tiny", dim=16)  # a folder of that name in the shell's folder: wrong shapes
    ok(cli(repo.work_tree, "verify-base", "HEAD", "org/tiny"))
    base_folder(tmp_path / "r" / "work" / "org" / "tiny", dim=16)  # one in -C's folder is taken first, as before
    assert_refused(cli(repo.work_tree, "verify-base", "HEAD", "org/tiny"), "does not match")


def test_fsck_remote_takes_a_folder_from_the_C_folder(tmp_path, elsewhere):
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("v1")
    ok(cli(repo.work_tree, "push", "../store"))
    assert (tmp_path / "r" / "store").is_dir()
    out = json.loads(ok(cli(repo.work_tree, "fsck", "--remote", "../store", "--json")).stdout)
    assert out["ok"] is True


def test_a_file_in_the_shell_folder_does_not_refuse_a_folder_argument(tmp_path, elsewhere):
    """click checked ``-o out`` against the shell's folder: a file named ``out`` there refused it."""
    repo = Repository.init(tmp_path / "r" / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("v1")
    (elsewhere / "out").write_text("a file of the shell's folder")
    ok(cli(repo.work_tree, "checkout", "HEAD", "-o", "out", "-q"))
    assert (repo.work_tree / "out" / "adapter_model.safetensors").is_file()
    # the check itself is kept, made where the command writes: a file there is still refused
    (repo.work_tree / "out2").write_text("a file")
    res = cli(repo.work_tree, "checkout", "HEAD", "-o", "out2")
    assert res.exit_code == 2 and "is a file" in res.stderr


# -- a URL where a local folder is needed ------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["deploy", "HEAD", "s3://serving/lora", "--name", "bot"],
    ["deploy", "HEAD", "az://serving/lora", "--name", "bot"],
    ["deployed", "s3://serving/lora"],
    ["checkout", "HEAD", "-o", "s3://serving/lora/bot"],
])
def test_a_bucket_url_where_a_folder_is_needed_is_refused_not_made_a_local_folder(tmp_path, args):
    """deploy switches a local link atomically: it has no bucket form. A URL there was shortened to a local
    path (``s3:/serving/lora``) inside the work tree and reported as deployed."""
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work).commit("v1")
    res = cli(work, *args)
    assert res.exit_code != 0 and "URL" in res.stderr and "export" in res.stderr, res.stderr
    assert not any(p.name.endswith(":") for p in work.rglob("*")), sorted(work.rglob("*"))
