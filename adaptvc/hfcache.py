"""Finding a base model on this machine: a folder, or a Hub model in the local Hugging Face cache."""

from __future__ import annotations

import os
from pathlib import Path


def hf_cache_folder(name: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of a Hub model in the local Hugging Face cache, if it is there (no import of
    huggingface_hub: the cache layout is stable and documented)."""
    if "/" not in name or name.startswith((".", "/")) or ".." in name:
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    repo = Path(cache) / ("models--" + name.replace("/", "--"))
    rev = revision or "main"
    ref = repo / "refs" / rev
    if ref.is_file():
        rev = ref.read_text().strip()
    folder = repo / "snapshots" / rev
    return folder if folder.is_dir() else None


def resolve_base_folder(name_or_path: str | None, revision: str | None = None) -> Path | None:
    if not name_or_path:
        return None
    p = Path(name_or_path).expanduser()
    if (p / "config.json").is_file():
        return p
    return hf_cache_folder(name_or_path, revision)
