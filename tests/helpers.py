"""Building real adapters for tests: a tiny Llama from a LlamaConfig, PEFT on top."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

TINY = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
PROBE = torch.arange(12).reshape(1, 12) % TINY["vocab_size"]


def tiny_base(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


def lora_model(seed: int = 1, r: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj"),
               dtype: torch.dtype | None = None) -> PeftModel:
    """A LoRA model whose B matrices are random (PEFT starts them at zero), so outputs differ from the base."""
    model = get_peft_model(tiny_base(), LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets)))
    randomize(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def randomize(model: torch.nn.Module, seed: int, only: str | None = None) -> list[str]:
    """Give new random values to LoRA parameters (all of them, or those whose name contains ``only``)."""
    g = torch.Generator().manual_seed(seed)
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name and (only is None or only in name):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.1)
                changed.append(name)
    return changed


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits


def sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256} of every file below ``folder``: a fingerprint of a whole tree."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "commit-cache"}  # (a cache of the store, written by any reading command)


def edit_tensor(path: str | os.PathLike[str], name_part: str, seed: int = 7) -> str:
    """Rewrite one tensor of a safetensors file (the first whose name contains ``name_part``)."""
    tensors = load_file(str(path))
    name = next(n for n in sorted(tensors) if name_part in n)
    g = torch.Generator().manual_seed(seed)
    tensors[name] = torch.randn(tensors[name].shape, generator=g).to(tensors[name].dtype)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return name


def store_bytes(admin_dir: str | os.PathLike[str]) -> int:
    return sum(p.stat().st_size for p in Path(admin_dir, "objects").rglob("*") if p.is_file())
