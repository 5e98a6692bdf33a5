"""The Hugging Face Hub remote, against a real local HTTP server spoken to by the official client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import HfApi, hf_hub_download
from peft import PeftModel

from adaptvc import Repository
from adaptvc.cli.main import cli
from adaptvc.errors import AdaptvcError
from tests import helpers


def versions(tmp_path, base: str | None = None) -> tuple[Repository, dict[str, torch.Tensor]]:
    """A repository with v1..v3 tagged, and the outputs each version gives."""
    repo = Repository.init(tmp_path / "work", base=base)
    model = helpers.lora_model(seed=1)
    outputs = {}
    for i in range(1, 4):
        helpers.randomize(model, seed=20 + i, only=None if i == 1 else "lora_B")
        model.save_pretrained(repo.work_tree)
        repo.commit(f"epoch {i}\n\nlonger description of epoch {i}")
        repo.tag(f"v{i}")
        outputs[f"v{i}"] = helpers.outputs(model)
    return repo, outputs


def test_every_version_loads_with_plain_peft_from_the_hub(hub, tmp_path):
    repo, outputs = versions(tmp_path, base="org/tiny-llama")
    repo.add_remote("origin", "hf://alice/support-bot")
    repo.push(tags=True)
    for tag, expected in outputs.items():
        model = PeftModel.from_pretrained(helpers.tiny_base(), "alice/support-bot", revision=tag).eval()
        assert torch.equal(helpers.outputs(model), expected), tag
        local = tmp_path / f"co-{tag}"
        repo.checkout(tag, local)
        hub_file = hf_hub_download("alice/support-bot", "adapter_model.safetensors", revision=tag)
        assert helpers.sha256(hub_file) == helpers.sha256(local / "adapter_model.safetensors")


def test_hub_layout_card_and_messages(hub, tmp_path):
    repo, _ = versions(tmp_path, base="org/tiny-llama")
    repo.add_remote("origin", "hf://alice/layout")
    repo.push(tags=True)
    api = HfApi()
    files = set(api.list_repo_files("alice/layout", revision="v3"))
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", ".adaptvc/commit.json",
            ".adaptvc/snapshot.json", ".adaptvc/README.md"} <= files
    head = repo.show("v3")
    commit_json = hf_hub_download("alice/layout", ".adaptvc/commit.json", revision="v3")
    assert Path(commit_json).read_bytes() == head.commit.encode()
    card = Path(hf_hub_download("alice/layout", "README.md", revision="v3")).read_text()
    front = card.split("---")[1]
    assert "base_model: org/tiny-llama" in front and "library_name: peft" in front and "- adaptvc" in front
    assert all(c.id[:12] in card for c in repo.log())
    original = hf_hub_download("alice/layout", ".adaptvc/README.md", revision="v3")
    assert helpers.sha256(original) == helpers.sha256(repo.work_tree / "README.md")
    titles = [c.title for c in api.list_repo_commits("alice/layout")]
    assert titles[:3] == ["epoch 3", "epoch 2", "epoch 1"]
    refs = api.list_repo_refs("alice/layout")
    assert sorted(t.name for t in refs.tags) == ["v1", "v2", "v3"]


def test_second_push_uploads_nothing_and_changed_push_sends_only_new_files(hub, tmp_path):
    repo, _ = versions(tmp_path)
    repo.add_remote("origin", "hf://alice/quiet")
    repo.push(tags=True)
    hub.state.reset_stats()
    assert repo.push(tags=True).message == "everything up to date"
    assert not [r for r in hub.stats.requests if r[0] in ("POST", "PUT")]
    assert hub.stats.lfs_uploads == [] and hub.stats.bytes_received == 0


def test_a_private_repository_without_a_token_says_how_to_log_in(hub, tmp_path, monkeypatch):
    repo, _ = versions(tmp_path)
    repo.add_remote("origin", "hf://alice/secret")
    repo.push(private=True)
    monkeypatch.delenv("HF_TOKEN")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    res = CliRunner().invoke(cli, ["clone", "hf://alice/secret", str(tmp_path / "c")])
    assert res.exit_code == 1 and "hf auth login" in res.stderr and "Traceback" not in res.stderr
    assert "hf_test_token" not in res.stderr + res.stdout


def test_fetch_falls_back_to_a_whole_download_when_range_is_ignored(hub, tmp_path):
    repo, _ = versions(tmp_path)
    repo.add_remote("origin", "hf://alice/norange")
    repo.push(tags=True)
    hub.state.honour_range = False
    clone = Repository.clone("hf://alice/norange", tmp_path / "clone")
    assert [c.id for c in clone.log()] == [c.id for c in repo.log()] and clone.fsck().ok


def test_clone_of_a_plain_peft_repository_imports_each_commit(hub, tmp_path):
    api = HfApi()
    api.create_repo("bob/plain")
    model = helpers.lora_model(seed=1)
    model.peft_config["default"].base_model_name_or_path = "org/tiny-llama"
    saved = []
    for i in range(3):
        helpers.randomize(model, seed=40 + i)
        folder = tmp_path / f"save{i}"
        model.save_pretrained(folder)
        api.upload_folder(repo_id="bob/plain", folder_path=str(folder), commit_message=f"training round {i + 1}")
        saved.append(helpers.sha256(folder / "adapter_model.safetensors"))
    api.create_tag("bob/plain", tag="first", revision=api.list_repo_commits("bob/plain")[2].commit_id)
    res = CliRunner().invoke(cli, ["clone", "hf://bob/plain", str(tmp_path / "imported")])
    assert res.exit_code == 0, res.stderr
    repo = Repository(tmp_path / "imported")
    log = repo.log()
    assert [c.summary for c in log] == ["training round 3", "training round 2", "training round 1"]
    assert all(c.base.name_or_path == "org/tiny-llama" for c in log)
    assert len({c.id for c in log}) == 3 and log[-1].parents == ()
    for i, c in enumerate(reversed(log)):
        out = tmp_path / f"out{i}"
        repo.checkout(c.id, out)
        assert helpers.sha256(out / "adapter_model.safetensors") == saved[i]
    assert repo.tags() == {"first": log[-1].id}


def test_cli_push_and_clone_with_the_hub(hub, tmp_path):
    repo, _ = versions(tmp_path)
    work = str(repo.work_tree)
    assert CliRunner().invoke(cli, ["-C", work, "remote", "add", "origin", "hf://alice/cli"]).exit_code == 0
    res = CliRunner().invoke(cli, ["-C", work, "push", "--tags", "--json"])
    assert res.exit_code == 0, res.stderr
    assert set(json.loads(res.stdout)["updated"]) == {"refs/heads/main", "refs/tags/v1", "refs/tags/v2", "refs/tags/v3"}
    res = CliRunner().invoke(cli, ["clone", "hf://alice/cli", str(tmp_path / "c"), "--revision", "v2"])
    assert res.exit_code == 0, res.stderr
    assert Repository(tmp_path / "c").head() == repo.resolve("v2")
    with pytest.raises(AdaptvcError, match="invalid Hub repository"):
        repo.add_remote("bad", "hf://../../etc")


def test_a_new_branch_on_a_plain_repository_holds_exactly_its_version(hub, tmp_path):
    """A branch pushed onto a Hub repository whose history adaptvc does not have locally starts from that
    repository's files: each Hub commit of the branch must hold exactly its version (the plain repository's
    other files removed, ours all uploaded), so plain PEFT loads it with revision=."""
    from tests.light import write_adapter

    api = HfApi()
    api.create_repo("bob/plain-branch")
    plain = write_adapter(tmp_path / "plain", seed=5)
    (plain / "training_notes.txt").write_text("not an adapter file\n")
    api.upload_folder(repo_id="bob/plain-branch", folder_path=str(plain), commit_message="by hand")
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=6, config={"lora_dropout": 0.2})
    v1 = repo.commit("v1")
    repo.add_remote("origin", "hf://bob/plain-branch")
    repo.branch("exp")
    repo.push(branches=["exp"])
    files = set(api.list_repo_files("bob/plain-branch", revision="exp"))
    assert "training_notes.txt" not in files and "adapter_model.safetensors" in files
    got = hf_hub_download("bob/plain-branch", "adapter_model.safetensors", revision="exp")
    out = tmp_path / "out"
    repo.checkout(v1.id, out)
    assert helpers.sha256(Path(got)) == helpers.sha256(out / "adapter_model.safetensors")
    cfg = json.loads(Path(hf_hub_download("bob/plain-branch", "adapter_config.json", revision="exp")).read_text())
    assert cfg["lora_dropout"] == 0.2
