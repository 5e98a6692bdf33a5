"""The command line: documented JSON keys, readable text, one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from peft import PeftModel

from adaptvc.cli.main import cli
from tests import helpers

LOG_KEYS = {"id", "parents", "message", "timestamp", "base", "author", "snapshot", "metadata", "provenance"}


def run(work: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["-C", str(work), *args])
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def run_json(work: Path, *args: str):
    return json.loads(run(work, *args, "--json").stdout)


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    run(tmp_path, "init", "work")
    helpers.lora_model(seed=1).save_pretrained(w)
    return w


def test_newcomer_session(work, tmp_path):
    assert run_json(work, "log") == []
    assert "No commits yet" in run(work, "log").stdout

    c1 = run_json(work, "commit", "-m", "epoch 1", "--meta", "step=100", "--meta", "note=first")
    assert set(c1) >= LOG_KEYS
    assert c1["message"] == "epoch 1" and c1["parents"] == [] and len(c1["id"]) == 32
    assert c1["metadata"] == {"step": 100, "note": "first"}
    assert set(c1["base"]) >= {"name_or_path", "revision"}

    helpers.edit_tensor(work / "adapter_model.safetensors", "lora_B")
    text = run(work, "commit", "-m", "epoch 2").stdout
    assert text.startswith("[main ") and "epoch 2" in text

    log = run_json(work, "log")
    assert [c["message"] for c in log] == ["epoch 2", "epoch 1"]
    assert log[0]["parents"] == [c1["id"]]
    assert all(set(c) >= LOG_KEYS for c in log)
    assert log[0]["timestamp"].endswith("+00:00")

    run(work, "tag", "v1", "HEAD~1")
    run(work, "tag", "v2")
    assert run_json(work, "tag") == [{"name": "v1", "id": c1["id"]}, {"name": "v2", "id": log[0]["id"]}]
    text = run(work, "log").stdout
    assert "(HEAD -> main, tag: v2)" in text and "tag: v1" in text and "epoch 1" in text
    assert len(run(work, "log", "--oneline").stdout.splitlines()) == 2
    assert [c["message"] for c in run_json(work, "log", "-n", "1")] == ["epoch 2"]

    shown = run_json(work, "show", "v1")
    assert shown["id"] == c1["id"]
    assert {f["path"] for f in shown["files"]} == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert all(set(f) >= {"path", "size", "hash"} for f in shown["files"])
    t = shown["tensors"][0]
    assert set(t) >= {"name", "dtype", "shape", "hash"}
    assert isinstance(t["shape"], list) and all(isinstance(d, int) for d in t["shape"])
    assert t["dtype"] == "F32"
    text = run(work, "show", "v1").stdout
    assert "adapter_model.safetensors" in text and "lora_A" in text

    assert run_json(work, "status") == {"clean": True, "head": log[0]["id"], "modified": [], "added": [],
                                        "removed": [], "config_changed": False, "config_keys": [],
                                        "files": {"modified": [], "added": [], "removed": []}, "upstream": None}
    assert "nothing to commit" in run(work, "status").stdout

    out = tmp_path / "serve"
    res = run_json(work, "checkout", "v1", "-o", str(out))
    assert res == {"commit": c1["id"], "path": str(out)}
    loaded = PeftModel.from_pretrained(helpers.tiny_base(), out).eval()
    assert torch.equal(helpers.outputs(loaded), helpers.outputs(helpers.lora_model(seed=1)))


def test_status_json_lists_full_sorted_names(work):
    run(work, "commit", "-m", "v1")
    b = helpers.edit_tensor(work / "adapter_model.safetensors", "layers.1.self_attn.v_proj.lora_B")
    a = helpers.edit_tensor(work / "adapter_model.safetensors", "layers.0.self_attn.q_proj.lora_A")
    st = run_json(work, "status")
    assert st["clean"] is False and st["modified"] == sorted([a, b])
    assert st["config_changed"] is False
    assert a.startswith("base_model.model.")
    text = run(work, "status").stdout
    assert f"modified: {a}" in text


def test_branches_and_switch(work):
    run(work, "commit", "-m", "v1")
    run(work, "branch", "exp")
    listing = run_json(work, "branch")
    assert [(b["name"], b["current"]) for b in listing] == [("exp", False), ("main", True)]
    run(work, "switch", "exp")
    helpers.edit_tensor(work / "adapter_model.safetensors", "lora_B")
    run(work, "commit", "-m", "on exp")
    assert "* exp" in run(work, "branch").stdout
    weights_exp = (work / "adapter_model.safetensors").read_bytes()
    run(work, "switch", "main")
    assert (work / "adapter_model.safetensors").read_bytes() != weights_exp
    run(work, "switch", "-c", "other")
    assert run_json(work, "branch")[2] == {"name": "other", "id": run_json(work, "log")[0]["id"], "current": True}
    run(work, "branch", "-d", "exp")
    assert [b["name"] for b in run_json(work, "branch")] == ["main", "other"]
    assert "branch: delete exp" in run(work, "reflog", "exp").stdout


def test_checkout_without_output_detaches_and_warns(work):
    run(work, "commit", "-m", "v1")
    helpers.edit_tensor(work / "adapter_model.safetensors", "lora_B")
    run(work, "commit", "-m", "v2")
    res = run(work, "checkout", "HEAD~1")
    assert "detached" in res.stderr
    assert "HEAD detached" in run(work, "status").stdout
    run(work, "checkout", "main")
    assert "On branch main" in run(work, "status").stdout


@pytest.mark.parametrize("args, message", [
    (["log"], "not an adaptvc repository"),
    (["checkout", "nope", "-o", "x"], "bad revision 'nope'"),
    (["show", "HEAD~5"], "further than the first commit"),
    (["tag", "bad..name"], "invalid name"),
    (["branch", "-rf"], None),  # looks like an option: click's usage error
    (["commit", "-m", "x", "--from", "does-not-exist"], "no PEFT adapter"),
    (["switch", "ghost"], "no such ref"),
    (["init"], "already exists"),
])
def test_errors_are_one_line_and_non_zero(work, tmp_path, args, message):
    run(work, "commit", "-m", "v1")
    where = tmp_path if args == ["log"] else work
    before = helpers.files_digest(work / ".adaptvc")
    res = run(where, *args, ok=False)
    assert res.exit_code != 0
    assert "Traceback" not in res.output + res.stderr
    if message is not None:
        assert res.exit_code == 1
        assert res.stderr.startswith("Error: ") and message in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    else:
        assert res.exit_code == 2
    assert helpers.files_digest(work / ".adaptvc") == before


def test_corrupt_safetensors_error(work):
    run(work, "commit", "-m", "v1")
    before = helpers.files_digest(work / ".adaptvc")
    weights = work / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    res = run(work, "commit", "-m", "bad", ok=False)
    assert res.exit_code == 1 and res.stderr.startswith("Error: adapter_model.safetensors: ")
    assert helpers.files_digest(work / ".adaptvc") == before


def test_nothing_to_commit_message(work):
    run(work, "commit", "-m", "v1")
    res = run(work, "commit", "-m", "v1 again", ok=False)
    assert res.exit_code == 1 and "nothing to commit" in res.stderr and "--allow-empty" in res.stderr


def _subprocess(args: list[str], cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "adaptvc", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_python_dash_m_works_like_the_command(work):
    res = _subprocess(["commit", "-m", "via python -m", "--json"], work)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["message"] == "via python -m"
    res = _subprocess(["show", "nope"], work)
    assert res.returncode == 1 and res.stderr.startswith("Error: ") and "Traceback" not in res.stderr


def test_the_core_does_not_import_torch(work):
    code = (
        "import sys\n"
        "from adaptvc.cli.main import main\n"
        "try:\n"
        "    main(['commit', '-m', 'light', '-q'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "main_heavy = [m for m in ('torch', 'transformers', 'peft', 'huggingface_hub') if m in sys.modules]\n"
        "print(','.join(main_heavy) or 'none')\n"
    )
    res = _subprocess([], work, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "none"
