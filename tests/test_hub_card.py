"""The Hub card a visitor sees (issue 12): the user's own card kept as the card with adaptvc's metadata merged
into its front matter, a version table whose every revision resolves on the Hub, tags and metrics, a snippet
that runs, and no empty repository left behind by a failed first push."""

from __future__ import annotations

import warnings

import pytest

from adaptvc import Repository
from adaptvc.errors import AdaptvcError, AdaptvcWarning
from tests.light import write_adapter

USER_CARD = """---
license: apache-2.0
language:
- en
tags:
- support
---

# Support bot

My own words about this adapter.
"""


def pushed(tmp_path, repo_id: str, base: str = "org/tiny-llama", card: bool = True) -> Repository:
    work = write_adapter(tmp_path / "work", seed=1)
    write_adapter(work / "second", seed=9)
    if card:
        (work / "README.md").write_text(USER_CARD)
    repo = Repository.init(work, base=base)
    for i in (1, 2, 3):
        write_adapter(work, seed=i)
        repo.commit(f"epoch {i}", metadata={"step": 100 * i, "metrics": {"eval_loss": 2.0 / i}})
        repo.tag(f"v{i}")
    repo.add_remote("origin", f"hf://{repo_id}")
    repo.push(tags=True)
    return repo


def test_the_card_keeps_the_users_words_and_lists_resolvable_versions(hub, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download

    repo = pushed(tmp_path, "alice/card")
    card = ModelCard.load("alice/card")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["language"] == ["en"]
    assert {"support", "adaptvc", "lora"} <= set(data["tags"])
    assert data["library_name"] == "peft" and data["base_model"] == "org/tiny-llama"
    assert "My own words about this adapter." in card.text
    assert "eval_loss" in card.text and "epoch 2" in card.text and "`v2`" in card.text
    assert 'subfolder="second"' in card.text
    assert 'AutoModelForCausalLM.from_pretrained("org/tiny-llama")' in card.text
    from adaptvc.remotes.hub_card import card_revisions

    revisions = card_revisions(card.text)
    assert len(revisions) >= 3
    for rev in revisions:  # every revision the card names is a real Hub revision
        hf_hub_download("alice/card", "adapter_config.json", revision=rev, cache_dir=tmp_path / "dl")
    # and the adapter's own README still round-trips byte for byte through a clone
    clone = Repository.clone("hf://alice/card", tmp_path / "clone")
    assert (clone.work_tree / "README.md").read_text() == USER_CARD
    assert clone.head() == repo.head()


def test_a_local_base_path_warns_on_push(hub, tmp_path):
    with pytest.warns(AdaptvcWarning, match="--base"):
        pushed(tmp_path, "alice/local", base=str(tmp_path / "some" / "local" / "base"), card=False)


def test_a_failed_first_push_leaves_no_empty_repository(hub, tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    repo.add_remote("origin", "hf://alice/failed")
    hub.state.fail_commits = True
    with pytest.raises(AdaptvcError):
        repo.push()
    assert "alice/failed" not in hub.state.repos
    hub.state.fail_commits = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdaptvcWarning)
        repo.push()
    assert "alice/failed" in hub.state.repos


def test_cloning_a_repository_without_versions_is_an_error(hub, tmp_path):
    from huggingface_hub import HfApi

    HfApi().create_repo("alice/empty")
    with pytest.raises(AdaptvcError, match="no adapter versions"):
        Repository.clone("hf://alice/empty", tmp_path / "clone")
    assert not (tmp_path / "clone").exists()
