"""The effective update of a LoRA module, ΔW = s·B·A, and how it changed — by low-rank algebra only.

Nothing here forms a d_out × d_in matrix. With Gram matrices of the factors (r × r),

    ‖s·B·A‖²            = s² · Σ (BᵀB) ⊙ (AAᵀ)
    ⟨s₁B₁A₁, s₂B₂A₂⟩    = s₁s₂ · Σ (B₁ᵀB₂) ⊙ (A₁A₂ᵀ)

which hold for any two ranks. For the change ‖ΔW₂ − ΔW₁‖ of two modules of the same shape and scale we do not
subtract large squared norms (that loses precision when little changed): with δB = B₂ − B₁ and δA = A₂ − A₁,
B₂A₂ − B₁A₁ = δB·A₂ + B₁·δA, whose squared norm is a sum of Gram terms of the same small size as the change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<embedding>embedding_)?(?P<factor>[AB])(?:\.weight)?$")
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraModuleNames:
    """The tensor names of one LoRA module (``module`` is the name before ``.lora_A``)."""

    module: str
    a: str
    b: str


def lora_modules(names: list[str] | set[str]) -> dict[str, LoraModuleNames]:
    """Group tensor names into LoRA modules that have both factors."""
    factors: dict[str, dict[str, str]] = {}
    for name in names:
        m = _LORA.match(name)
        if m:
            factors.setdefault(m.group("module"), {})[m.group("factor")] = name
    return {mod: LoraModuleNames(mod, f["A"], f["B"]) for mod, f in factors.items() if "A" in f and "B" in f}


def _pattern_key(patterns: dict[str, Any], key: str) -> str | None:
    """PEFT's rule for rank_pattern / alpha_pattern: a pattern matches a module name ending in it."""
    for pattern in patterns:
        try:
            if re.match(rf"(.*\.)?({pattern})$", key):
                return pattern
        except re.error:
            continue
    return None


def lora_scale(config: dict[str, Any], module: str, rank: int) -> float:
    """s = lora_alpha / r (lora_alpha / √r with use_rslora), honouring alpha_pattern; ``module`` is the
    module's tensor-name prefix (folder prefix already removed)."""
    key = module[len(_PEFT_PREFIX):] if module.startswith(_PEFT_PREFIX) else module
    alpha_pattern = config.get("alpha_pattern") or {}
    hit = _pattern_key(alpha_pattern, key)
    alpha = float(alpha_pattern[hit] if hit is not None else config.get("lora_alpha", 8))
    if rank <= 0:
        return 0.0
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def as_factors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A as r × d_in and B as d_out × r (conv kernels and embeddings flattened); None if they do not fit."""
    if a.ndim < 2 or b.ndim < 2:
        return None
    a2 = a.reshape(a.shape[0], -1)
    b2 = b.reshape(b.shape[0], -1)
    if b2.shape[1] != a2.shape[0]:
        return None
    return a2, b2


def _gram_dot(b1: np.ndarray, a1: np.ndarray, b2: np.ndarray, a2: np.ndarray) -> float:
    """⟨B₁A₁, B₂A₂⟩ through r × r products."""
    return float(np.sum((b1.T @ b2) * (a1 @ a2.T)))


@dataclass(frozen=True)
class UpdateComparison:
    norm_a: float
    norm_b: float
    change: float
    cosine: float | None

    @property
    def rel_change(self) -> float | None:
        return self.change / self.norm_a if self.norm_a > 0 else None


def compare_updates(a1: np.ndarray, b1: np.ndarray, s1: float,
                    a2: np.ndarray, b2: np.ndarray, s2: float) -> UpdateComparison:
    """Compare ΔW₁ = s₁B₁A₁ with ΔW₂ = s₂B₂A₂ (factors as returned by :func:`as_factors`)."""
    sq1 = s1 * s1 * _gram_dot(b1, a1, b1, a1)
    sq2 = s2 * s2 * _gram_dot(b2, a2, b2, a2)
    dot = s1 * s2 * _gram_dot(b1, a1, b2, a2)
    if a1.shape == a2.shape and b1.shape == b2.shape and s1 == s2:
        db, da = b2 - b1, a2 - a1
        change_sq = s1 * s1 * (_gram_dot(db, a2, db, a2) + _gram_dot(b1, da, b1, da)
                               + 2.0 * _gram_dot(db, a2, b1, da))
    else:
        change_sq = sq1 + sq2 - 2.0 * dot
    n1, n2 = math.sqrt(max(sq1, 0.0)), math.sqrt(max(sq2, 0.0))
    cosine = dot / (n1 * n2) if n1 > 0 and n2 > 0 else None
    if cosine is not None:
        cosine = max(-1.0, min(1.0, cosine))
    return UpdateComparison(n1, n2, math.sqrt(max(change_sq, 0.0)), cosine)
