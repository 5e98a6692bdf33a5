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

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest_plugins = ["tests.hubserver"]  # the `hub` fixture: a local Hub-compatible server

#: what makes a test module slow to even import: it builds live models (torch, transformers, peft)
_HEAVY_MODULES = {"torch", "peft", "transformers", "tests.helpers"}
_HEAVY_FIXTURES = {"base_dir", "lora_model", "repo_dir"}


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: tests that need no torch, start no server and kill nothing "
                          "(make test-fast)")


def needs_torch(path: Path) -> bool:
    """Whether a test module imports torch/peft/transformers (or the helpers that do) or uses a fixture
    that builds a live model."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in _HEAVY_MODULES or a.name in _HEAVY_MODULES
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in _HEAVY_MODULES or module in _HEAVY_MODULES or \
                    (module == "tests" and any(a.name == "helpers" for a in node.names)):
                return True
        if isinstance(node, ast.arg) and node.arg in _HEAVY_FIXTURES:
            return True
    return False


#: fixtures that start a real server (the test Hub, moto, Azurite): their tests run in ``make test``, not in the
#: fast tier
_SERVER_FIXTURES = {"hub", "s3_service", "azure_service"}


_SERVER_PARAMS = {"hub", "s3", "az"}  # remote fixtures parametrised by kind start their server on demand


def _left_out_of_the_fast_tier(item) -> bool:
    params = getattr(item, "callspec", None)
    kinds = {v for v in params.params.values() if isinstance(v, str)} if params is not None else set()
    return item.get_closest_marker("slow") is not None or bool(_SERVER_FIXTURES & set(item.fixturenames)) \
        or bool(_SERVER_PARAMS & kinds)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--fast"):
        kept = [i for i in items if not _left_out_of_the_fast_tier(i)]
        config.hook.pytest_deselected(items=[i for i in items if _left_out_of_the_fast_tier(i)])
        items[:] = kept


def pytest_ignore_collect(collection_path, config):
    if config.getoption("--fast") and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return needs_torch(Path(collection_path))
    return None


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test away from the real home folder and HF cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """A tiny Llama base model saved once per test session."""
    from tests import helpers

    path = tmp_path_factory.mktemp("base")
    helpers.tiny_base().save_pretrained(path)
    return path


@pytest.fixture
def lora_model():
    from tests import helpers

    return helpers.lora_model()


@pytest.fixture
def repo_dir(tmp_path):
    """A fresh repository whose work tree holds a saved LoRA adapter (not yet committed)."""
    from adaptvc import Repository
    from tests import helpers

    work = tmp_path / "work"
    Repository.init(work)
    model = helpers.lora_model()
    model.save_pretrained(work)
    return work
