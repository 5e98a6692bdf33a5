"""Shared fixtures: real PEFT adapters on a tiny Llama built locally (nothing is downloaded)."""

from __future__ import annotations

import os
import tempfile
import warnings

# Offline and quiet before any Hugging Face library is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["ADAPTVC_AUTHOR"] = "Test Author <test@example.com>"
# huggingface_hub reads its cache location once, at import: never let tests touch the real one
_HF_HOME = tempfile.mkdtemp(prefix="adaptvc-tests-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # the local test Hub speaks classic LFS, not Xet
warnings.filterwarnings("ignore", category=FutureWarning)

import pytest  # noqa: E402

from tests import helpers  # noqa: E402

pytest_plugins = ["tests.hubserver"]  # the `hub` fixture: a local Hub-compatible server


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test away from the real home folder and HF cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """A tiny Llama base model saved once per test session."""
    path = tmp_path_factory.mktemp("base")
    helpers.tiny_base().save_pretrained(path)
    return path


@pytest.fixture
def lora_model():
    return helpers.lora_model()


@pytest.fixture
def repo_dir(tmp_path):
    """A fresh repository whose work tree holds a saved LoRA adapter (not yet committed)."""
    from adaptvc import Repository

    work = tmp_path / "work"
    Repository.init(work)
    model = helpers.lora_model()
    model.save_pretrained(work)
    return work
