"""Short display names for PEFT tensor and module names."""

from __future__ import annotations


def short_module_name(name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` -> ``layers.0.self_attn.q_proj``."""
    for prefix in ("base_model.model.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name
