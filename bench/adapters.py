"""Realistic adapters in PEFT layout, generated without torch: the exact key names PEFT writes for a Llama,
bf16/fp16 values drawn from a normal distribution, written as a safetensors file."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Profile:
    name: str
    layers: int
    hidden: int
    intermediate: int
    rank: int
    targets: tuple[str, ...]
    dtype: str  # "BF16" or "F16"
    kv_hidden: int | None = None  # grouped-query attention: k/v output size

    def shapes(self) -> dict[str, tuple[int, int]]:
        """{tensor name: shape} in the order PEFT's state dict lists them."""
        out: dict[str, tuple[int, int]] = {}
        kv = self.kv_hidden or self.hidden
        for i in range(self.layers):
            for t in self.targets:
                group = "self_attn" if t in ATTENTION else "mlp"
                d_in = self.intermediate if t == "down_proj" else self.hidden
                d_out = {"k_proj": kv, "v_proj": kv, "gate_proj": self.intermediate,
                         "up_proj": self.intermediate}.get(t, self.hidden)
                prefix = f"base_model.model.model.layers.{i}.{group}.{t}"
                out[f"{prefix}.lora_A.weight"] = (self.rank, d_in)
                out[f"{prefix}.lora_B.weight"] = (d_out, self.rank)
        return out

    def nbytes(self) -> int:
        return sum(a * b * 2 for a, b in self.shapes().values())


PROFILES = {
    "7b-r16-attn-fp16": Profile("7b-r16-attn-fp16", 32, 4096, 11008, 16, ("q_proj", "k_proj", "v_proj", "o_proj"),
                                "F16"),
    "7b-r64-all-bf16": Profile("7b-r64-all-bf16", 32, 4096, 11008, 64, ATTENTION + MLP, "BF16"),
    "70b-r16-all-bf16": Profile("70b-r16-all-bf16", 80, 8192, 28672, 16, ATTENTION + MLP, "BF16", kv_hidden=1024),
}


def _values(shape: tuple[int, int], dtype: str, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if dtype == "F16":
        return x.astype(np.float16).view(np.uint16)
    return (x.view(np.uint32) >> 16).astype(np.uint16)  # bf16: the top half of a float32


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """``tensors`` (raw arrays of safetensors dtype ``dtype``) as a safetensors file, names sorted, with PEFT's
    ``{"format": "pt"}`` metadata (written by hand: bf16 arrays are uint16 views here, which the library would
    not label bf16)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in sorted(tensors):
            f.write(tensors[name].tobytes())


def write_adapter(folder: Path, profile: Profile, seed: int, previous: dict[str, np.ndarray] | None = None,
                  change: str = "all") -> dict[str, np.ndarray]:
    """Write adapter_model.safetensors + adapter_config.json into ``folder``.

    ``change="all"`` draws every tensor anew; ``"half-B"`` keeps ``previous`` and redraws every other lora_B.
    Returns the tensors written (as uint16 arrays) so the next version can build on them."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    b_index = 0
    for name, shape in profile.shapes().items():
        redraw = previous is None or change == "all"
        if not redraw and name.endswith("lora_B.weight"):
            redraw = b_index % 2 == 0
            b_index += 1
        tensors[name] = _values(shape, profile.dtype, rng) if redraw else previous[name]
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", tensors, profile.dtype)
    config = {"peft_type": "LORA", "r": profile.rank, "lora_alpha": 2 * profile.rank,
              "target_modules": list(profile.targets), "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
              "revision": None, "task_type": "CAUSAL_LM", "use_rslora": False, "use_dora": False}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return tensors
