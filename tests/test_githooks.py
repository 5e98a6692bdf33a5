"""Code provenance, adaptvc.lock and the git hooks, against real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from adaptvc import Repository
from adaptvc.cli.main import cli
from adaptvc.integrations import githooks as gitcode
from tests import helpers

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PYTHONPATH": str(ROOT)}


def git(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=120)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def code(tmp_path) -> Path:
    """A git repository of training code, with an adaptvc work tree inside it (git-ignored)."""
    top = tmp_path / "code"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    (top / "train.py").write_text("print('train')\n")
    (top / ".gitignore").write_text("adapter/\n")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "code v1")
    Repository.init(top / "adapter")
    return top


def test_provenance_is_recorded_without_paths(code, tmp_path):
    repo = Repository(code / "adapter")
    helpers.lora_model(seed=1).save_pretrained(repo.work_tree)
    c = repo.commit("clean code")
    head = git(code, "rev-parse", "HEAD").stdout.strip()
    assert c.provenance == {"git_commit": head, "dirty": False, "branch": "main"}
    (code / "train.py").write_text("print('changed')\n")
    helpers.edit_tensor(repo.work_tree / "adapter_model.safetensors", "lora_B")
    c2 = repo.commit("dirty code")
    assert c2.provenance["dirty"] is True
    assert str(tmp_path) not in json.dumps(c2.provenance)
    text = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "log", "-n", "1"]).stdout
    assert f"Code:   git {head[:12]} (dirty) on main" in text
    outside = Repository.init(tmp_path / "elsewhere")
    helpers.lora_model(seed=2).save_pretrained(outside.work_tree)
    assert outside.commit("no git").provenance is None


def test_pre_commit_refuses_adapter_weights(code):
    assert CliRunner().invoke(cli, ["-C", str(code), "hooks", "install"]).exit_code == 0
    big = code / "weights"
    big.mkdir()
    (big / "adapter_model.safetensors").write_bytes(os.urandom(6 * 1024 * 1024))
    git(code, "add", "weights/adapter_model.safetensors")
    res = git(code, "commit", "-m", "oops", ok=False)
    assert res.returncode != 0 and "refusing to commit adapter weights" in res.stderr
    assert "adaptvc commit" in res.stderr and "git rm --cached" in res.stderr
    git(code, "config", "adaptvc.maxWeightBytes", str(10 * 1024 * 1024))
    assert git(code, "commit", "-q", "-m", "allowed now").returncode == 0
    (code / "small.bin").write_bytes(b"tiny")
    git(code, "add", "small.bin")
    git(code, "config", "--unset", "adaptvc.maxWeightBytes")
    assert git(code, "commit", "-q", "-m", "small files are fine").returncode == 0


def test_checkout_of_old_code_brings_back_its_adapter(code):
    repo = Repository(code / "adapter")
    model = helpers.lora_model(seed=1)
    model.save_pretrained(repo.work_tree)
    repo.commit("adapter v1")
    repo.tag("v1")
    v1 = helpers.sha256(repo.work_tree / "adapter_model.safetensors")
    runner = CliRunner()
    assert runner.invoke(cli, ["-C", str(code), "hooks", "install"]).exit_code == 0
    res = runner.invoke(cli, ["-C", str(repo.work_tree), "pin", "v1", "--json"])
    assert res.exit_code == 0, res.stderr
    lock = json.loads((code / "adaptvc.lock").read_text())
    assert lock == {"format": 1, "work_tree": "adapter", "commit": repo.resolve("v1"), "rev": "v1"}
    git(code, "add", "adaptvc.lock")
    git(code, "commit", "-q", "-m", "pin adapter v1")

    git(code, "checkout", "-q", "-b", "exp")
    helpers.randomize(model, seed=9)
    model.save_pretrained(repo.work_tree)
    repo.commit("adapter v2")
    v2 = helpers.sha256(repo.work_tree / "adapter_model.safetensors")
    assert runner.invoke(cli, ["-C", str(repo.work_tree), "pin"]).exit_code == 0
    git(code, "commit", "-q", "-am", "pin adapter v2")

    res = git(code, "checkout", "main")
    assert "restored" in res.stderr
    assert helpers.sha256(repo.work_tree / "adapter_model.safetensors") == v1
    git(code, "checkout", "exp")
    assert helpers.sha256(repo.work_tree / "adapter_model.safetensors") == v2

    git(code, "checkout", "-q", "main")
    assert helpers.sha256(repo.work_tree / "adapter_model.safetensors") == v1
    git(code, "merge", "-q", "--ff-only", "exp")  # post-merge
    assert helpers.sha256(repo.work_tree / "adapter_model.safetensors") == v2

    # uncommitted adapter changes are never overwritten; git still succeeds
    helpers.edit_tensor(repo.work_tree / "adapter_model.safetensors", "lora_A", seed=5)
    dirty = helpers.sha256(repo.work_tree / "adapter_model.safetensors")
    git(code, "checkout", "-q", "-b", "back", "HEAD~1")
    res = git(code, "checkout", "main")
    assert res.returncode == 0 and "not restoring" in res.stderr
    assert helpers.sha256(repo.work_tree / "adapter_model.safetensors") == dirty


def test_install_refuses_foreign_hooks_and_uninstall_removes_only_ours(code):
    hooks = Path(git(code, "rev-parse", "--git-path", "hooks").stdout.strip())
    hooks = hooks if hooks.is_absolute() else code / hooks
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\necho mine\n")
    res = CliRunner().invoke(cli, ["-C", str(code), "hooks", "install"])
    assert res.exit_code == 1 and "was not installed by adaptvc" in res.stderr
    (hooks / "pre-commit").unlink()
    assert CliRunner().invoke(cli, ["-C", str(code), "hooks", "install"]).exit_code == 0
    (hooks / "pre-push").write_text("#!/bin/sh\n")
    res = CliRunner().invoke(cli, ["-C", str(code), "hooks", "uninstall"])
    assert res.exit_code == 0 and {p.name for p in hooks.iterdir() if not p.name.endswith(".sample")} == {"pre-push"}


@pytest.mark.parametrize("lock", [
    {"format": 1, "work_tree": "../../etc", "commit": "a" * 32, "rev": "x"},
    {"format": 1, "work_tree": "adapter", "commit": "not-an-id", "rev": "x"},
    {"format": 1, "work_tree": "/abs", "commit": "a" * 32, "rev": "x"},
    [1, 2, 3],
])
def test_a_hostile_lock_is_refused_with_a_warning(code, lock):
    (code / "adaptvc.lock").write_text(json.dumps(lock))
    code_, message = gitcode.run_hook("post-merge", [], code)
    assert code_ == 0 and message.startswith("adaptvc: warning:")


def test_the_hooks_folder_matches_what_the_installer_writes():
    for name in gitcode.HOOKS:
        assert (ROOT / "hooks" / name).read_text() == gitcode.hook_script(name, "python3")
        assert os.access(ROOT / "hooks" / name, os.X_OK)
    assert f'exec "{sys.executable}" -m adaptvc' in gitcode.hook_script("pre-commit", sys.executable)
