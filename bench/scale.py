"""Inputs at scale for the benchmark: a history of 10,000 commits, 1,000 fully changed versions of a small
adapter (files in the store), and an adapter with one very large tensor (diff memory)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .adapters import write_safetensors


def history(work: Path, commits: int) -> Path:
    """A repository whose main branch has ``commits`` commits of one small adapter (written with the
    plumbing: objects and commits, one flush, one ref update — building it through ``commit`` would spend
    minutes in fsync)."""
    from adaptvc import Repository
    from adaptvc.objects import Commit
    from adaptvc.ops.record import now

    _small_adapter(work, seed=0)
    repo = Repository.init(work)
    first = repo.commit("c0")
    store = repo.store
    parent = first.id
    for i in range(1, commits):
        c = Commit(snapshot=first.snapshot, parents=(parent,), message=f"c{i}: step {i * 10}",
                   author=first.author, timestamp=now(),
                   base=first.base, provenance=None, metadata={"loss": 1.0 / (i + 1)})
        store.put_commit(c)
        parent = c.id
    store.flush()
    repo.refs.set_if_equals("refs/heads/main", first.id, parent, f"bench: {commits} commits")
    return work


def many_versions(work: Path, versions: int) -> dict[str, int]:
    """Commit ``versions`` fully changed versions of a small adapter; the files in the store before and
    after ``gc`` (which consolidates the packs)."""
    from adaptvc import Repository

    _small_adapter(work, seed=0)
    repo = Repository.init(work)
    for i in range(versions):
        _small_adapter(work, seed=i + 1)
        repo.commit(f"v{i}")
    before = count_files(work / ".adaptvc" / "objects")
    repo.gc(grace_seconds=0)
    after = count_files(work / ".adaptvc" / "objects")
    return {"versions": versions, "files_before_gc": before, "files_after_gc": after}


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def _small_adapter(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = {f"base_model.model.model.layers.{i}.self_attn.{m}_proj.lora_{ab}.weight":
               rng.standard_normal((8, 64) if ab == "A" else (64, 8)).astype(np.float32)
               for i in range(2) for m in ("q", "v") for ab in ("A", "B")}
    _write(folder, tensors, "F32", {"r": 8, "target_modules": ["q_proj", "v_proj"]})


def big_tensor_adapter(folder: Path, mbytes: int, seed: int) -> Path:
    """A LoRA with ``embed_tokens`` in ``modules_to_save``: one bf16 tensor of ``mbytes`` MB (hidden 4096),
    drawn anew for every seed, and small lora tensors."""
    rng = np.random.default_rng(seed)
    hidden = 4096
    vocab = max(1, mbytes * 1_000_000 // (hidden * 2))
    tensors: dict[str, np.ndarray] = {}
    emb = np.empty((vocab, hidden), dtype=np.uint16)
    for start in range(0, vocab, 8192):  # in blocks: a float32 draw of the whole tensor would double the memory
        block = rng.standard_normal((min(8192, vocab - start), hidden), dtype=np.float32) * np.float32(0.02)
        emb[start:start + len(block)] = (block.view(np.uint32) >> 16).astype(np.uint16)
    tensors["base_model.model.model.embed_tokens.weight"] = emb
    for i in range(2):
        for m in ("q", "v"):
            a = rng.standard_normal((16, hidden), dtype=np.float32) * np.float32(0.02)
            b = rng.standard_normal((hidden, 16), dtype=np.float32) * np.float32(0.02)
            for ab, x in (("A", a), ("B", b)):
                tensors[f"base_model.model.model.layers.{i}.self_attn.{m}_proj.lora_{ab}.weight"] = \
                    (x.view(np.uint32) >> 16).astype(np.uint16)
    _write(folder, tensors, "BF16", {"r": 16, "target_modules": ["q_proj", "v_proj"],
                                     "modules_to_save": ["embed_tokens"]})
    return folder


def _write(folder: Path, tensors: dict[str, np.ndarray], dtype: str, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", tensors, dtype)
    full = {"peft_type": "LORA", "lora_alpha": 2 * config["r"], "base_model_name_or_path": "bench/llama",
            "task_type": "CAUSAL_LM", "revision": None, **config}
    (folder / "adapter_config.json").write_text(json.dumps(full, indent=2, sort_keys=True))
