"""The effective update of a LoRA module, ΔW = s·B·A, and how it changed — by low-rank algebra only.

Nothing here forms a d_out × d_in matrix. With Gram matrices of the factors (r × r),

    ‖s·B·A‖²            = s² · Σ (BᵀB) ⊙ (AAᵀ)
    ⟨s₁B₁A₁, s₂B₂A₂⟩    = s₁s₂ · Σ (B₁ᵀB₂) ⊙ (A₁A₂ᵀ)

which hold for any two ranks. For the change ‖ΔW₂ − ΔW₁‖ of two modules of the same shape and scale we do not
subtract large squared norms (that loses precision when little changed): with δB = B₂ − B₁ and δA = A₂ − A₁,
B₂A₂ − B₁A₁ = δB·A₂ + B₁·δA, whose squared norm is a sum of Gram terms of the same small size as the change.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidConfigError
from ..peft_layout import PEFT_PREFIX as _PEFT_PREFIX

if TYPE_CHECKING:  # numpy is imported by the functions that compute: the names and config readers stay light
    import numpy as np

#: a LoRA factor's tensor name (``….lora_A.weight``, ``….lora_embedding_B``): the one definition, merge uses it too
LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<embedding>embedding_)?(?P<factor>[AB])(?:\.weight)?$")


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
        m = LORA_TENSOR.match(name)
        if m:
            factors.setdefault(m.group("module"), {})[m.group("factor")] = name
    return {mod: LoraModuleNames(mod, f["A"], f["B"]) for mod, f in factors.items() if "A" in f and "B" in f}


# -- config values: checked where they are read (a config is hostile input: any JSON may stand there) -----------
#: the largest alpha (in size) a config may give; far beyond any real one, and small enough that s² stays finite
MAX_CONFIG_NUMBER = 1e15  # (the message of config_number says so)
#: the largest rank a config may give
MAX_CONFIG_RANK = (1 << 31) - 1


def config_number(value: Any, key: str, where: str = "") -> float:
    """``value`` as a float: a finite number (not a boolean) of at most :data:`MAX_CONFIG_NUMBER` in size;
    otherwise :class:`~adaptvc.errors.InvalidConfigError` naming ``key`` (and ``where``: the config)."""
    # abs() compares a huge int with the float bound exactly (no overflow); NaN fails the comparison
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= MAX_CONFIG_NUMBER:
        raise InvalidConfigError(key, value, "a finite number within ±1e15", where)
    return float(value)


def config_rank(value: Any, key: str, where: str = "") -> int:
    """``value`` as a rank: a whole number (``8`` or ``8.0``, not a boolean) from 0 to :data:`MAX_CONFIG_RANK`;
    otherwise :class:`~adaptvc.errors.InvalidConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_CONFIG_RANK \
            or (isinstance(value, float) and not value.is_integer()):
        raise InvalidConfigError(key, value, f"a whole number from 0 to {MAX_CONFIG_RANK}", where)
    return int(value)


def config_flag(config: dict[str, Any], key: str, where: str = "") -> bool:
    """A boolean key (absent or null: False); anything else is an :class:`~adaptvc.errors.InvalidConfigError`
    (the text ``"false"`` would otherwise count as true)."""
    value = config.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InvalidConfigError(key, value, "true or false", where)


def _pattern_key(patterns: dict[str, Any], key: str) -> str | None:
    """PEFT's rule for rank_pattern / alpha_pattern: a pattern matches a module name ending in it."""
    for pattern in patterns:
        try:
            if re.match(rf"(.*\.)?({pattern})$", key):
                return pattern
        except re.error:
            continue
    return None


def _patterned(config: dict[str, Any], pattern_field: str, module: str, default_key: str,
               default: Any, where: str) -> tuple[str, Any]:
    """(the key the value comes from, the value): the first pattern of ``pattern_field`` matching ``module``,
    else ``default`` (from ``default_key``). The patterns must be an object (absent or null: none)."""
    patterns = config.get(pattern_field)
    if patterns is None:
        return default_key, default
    if not isinstance(patterns, dict):
        raise InvalidConfigError(pattern_field, patterns, "an object of module-name patterns", where)
    key = module[len(_PEFT_PREFIX):] if module.startswith(_PEFT_PREFIX) else module
    hit = _pattern_key(patterns, key)
    if hit is None:
        return default_key, default
    shown = json.dumps(hit if len(hit) <= 40 else hit[:37] + "...")
    return f"{pattern_field}[{shown}]", patterns[hit]


def lora_scale(config: dict[str, Any], module: str, rank: int, where: str = "") -> float:
    """s = lora_alpha / r (lora_alpha / √r with use_rslora), honouring alpha_pattern; ``module`` is the
    module's tensor-name prefix (folder prefix already removed). A value that is not what PEFT reads there
    is an :class:`~adaptvc.errors.InvalidConfigError` naming the key and ``where``."""
    key, alpha = _patterned(config, "alpha_pattern", module, "lora_alpha", config.get("lora_alpha", 8), where)
    alpha = config_number(alpha, key, where)
    rslora = config_flag(config, "use_rslora", where)
    if rank <= 0:
        return 0.0
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def adalora_scale(config: dict[str, Any], rank: int, where: str = "") -> float:
    """AdaLoRA's s = lora_alpha / (ranknum + 1e-5), as PEFT computes it: ranknum is the rank the module was
    created with (``init_r``), kept when the allocator prunes ranks; lora_alpha <= 0 means the rank itself."""
    alpha = config_number(config.get("lora_alpha", 8), "lora_alpha", where)
    init_r = float(config_rank(config.get("init_r", 12), "init_r", where) or 12)
    return (alpha if alpha > 0 else float(rank)) / (init_r + 1e-5)


def lycoris_rank_and_scale(config: dict[str, Any], module: str, where: str = "") -> tuple[int, float]:
    """LoHa and LoKr: r from rank_pattern or r, s = alpha / r (alpha from alpha_pattern or alpha)."""
    key, rank = _patterned(config, "rank_pattern", module, "r", config.get("r", 8), where)
    rank = config_rank(rank, key, where)
    key, alpha = _patterned(config, "alpha_pattern", module, "alpha", config.get("alpha", rank), where)
    alpha = config_number(alpha, key, where)
    return rank, (alpha / rank if rank > 0 else 0.0)


#: a LoHa or LoKr factor's tensor name: the one definition, merge uses it too
LYCORIS_TENSOR = re.compile(r"^(?P<module>.+)\.(?P<part>hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2)"
                            r"(?:\.weight)?$")
#: LoHa's update has rank up to r₁·r₂; above this the Khatri-Rao factors would be too large to form
MAX_LOHA_RANK = 256


def lycoris_modules(names: list[str] | set[str]) -> dict[str, dict[str, str]]:
    """``{module: {part: tensor name}}`` for LoHa (``hada_*``) and LoKr (``lokr_*``) modules."""
    out: dict[str, dict[str, str]] = {}
    for name in names:
        m = LYCORIS_TENSOR.match(name)
        if m:
            out.setdefault(m.group("module"), {})[m.group("part")] = name
    return out


def loha_factors(w1a: Any, w1b: Any, w2a: Any, w2b: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(W₁ₐW₁ᵦ) ⊙ (W₂ₐW₂ᵦ) = K_B·K_A with K_B the row-wise Khatri-Rao product of W₁ₐ and W₂ₐ (d_out × r₁r₂)
    and K_A that of W₁ᵦᵀ and W₂ᵦᵀ, transposed (r₁r₂ × d_in): a low-rank form the LoRA algebra takes as is."""
    import numpy as np

    if min(np.ndim(w) for w in (w1a, w1b, w2a, w2b)) != 2 or w1a.shape[1] * w2a.shape[1] > MAX_LOHA_RANK:
        return None
    kb = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], -1)
    ka = (w1b.T[:, :, None] * w2b.T[:, None, :]).reshape(w1b.shape[1], -1).T
    return ka, kb


def kron_comparison(w1: tuple[np.ndarray, np.ndarray], w2: tuple[np.ndarray, np.ndarray], s1: float,
                    s2: float) -> UpdateComparison:
    """LoKr: ΔW = s·(W₁ ⊗ W₂). ‖X ⊗ Y‖ = ‖X‖‖Y‖ and ⟨X₁ ⊗ Y₁, X₂ ⊗ Y₂⟩ = ⟨X₁, X₂⟩⟨Y₁, Y₂⟩: no Kronecker
    product is formed. ``w1`` holds (W₁ of version a, of version b), ``w2`` the same for W₂."""
    import numpy as np

    (x1, x2), (y1, y2) = w1, w2
    if x1.shape != x2.shape or y1.shape != y2.shape:
        raise ValueError("LoKr factors of different shapes")
    n1 = abs(s1) * float(np.linalg.norm(x1)) * float(np.linalg.norm(y1))
    n2 = abs(s2) * float(np.linalg.norm(x2)) * float(np.linalg.norm(y2))
    dot = s1 * s2 * float(np.sum(x1 * x2)) * float(np.sum(y1 * y2))
    change = math.sqrt(max(n1 * n1 + n2 * n2 - 2.0 * dot, 0.0))
    return UpdateComparison(n1, n2, change, _cosine(dot, n1, n2))


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
    import numpy as np

    return float(np.sum((b1.T @ b2) * (a1 @ a2.T)))


@dataclass(frozen=True)
class FactorStats:
    """Per-tensor numbers of one factor pair (A₁, A₂) or (B₁, B₂), read off the Gram matrices."""

    norm_1: float
    norm_2: float
    dot: float
    delta: float
    max_abs_delta: float


@dataclass(frozen=True)
class UpdateComparison:
    norm_a: float
    norm_b: float
    change: float
    cosine: float | None
    factor_a: FactorStats | None = None  # the A factors' own numbers, when both have the same shape
    factor_b: FactorStats | None = None

    @property
    def rel_change(self) -> float | None:
        return self.change / self.norm_a if self.norm_a > 0 else None


def _cosine(dot: float, n1: float, n2: float) -> float | None:
    return max(-1.0, min(1.0, dot / (n1 * n2))) if n1 > 0 and n2 > 0 else None


def _same_shape(a1: np.ndarray, b1: np.ndarray, s1: float, a2: np.ndarray, b2: np.ndarray,
                s2: float) -> UpdateComparison:
    """Six r × r products in all. With δA = A₂ − A₁ and δB = B₂ − B₁:
    B₂A₂ − B₁A₁ = δB·A₂ + B₁·δA, and the Grams of A₁ and B₂ follow from those of A₂, δA, B₁, δB."""
    import numpy as np

    da, db = a2 - a1, b2 - b1
    g_b1 = b1.T @ b1
    g_a2 = a2 @ a2.T
    g_db = db.T @ db
    g_da = da @ da.T
    x_b = db.T @ b1   # δBᵀB₁
    x_a = a2 @ da.T   # A₂δAᵀ
    g_b2 = g_b1 + x_b + x_b.T + g_db
    g_a1 = g_a2 - x_a - x_a.T + g_da
    sq1 = s1 * s1 * float(np.sum(g_b1 * g_a1))
    sq2 = s2 * s2 * float(np.sum(g_b2 * g_a2))
    # ‖δB·A₂ + B₁·δA‖² = ‖δB A₂‖² + ‖B₁ δA‖² + 2⟨δB A₂, B₁ δA⟩, all of the size of the change itself
    change_sq = s1 * s1 * (float(np.sum(g_db * g_a2)) + float(np.sum(g_b1 * g_da)) + 2.0 * float(np.sum(x_b * x_a)))
    n1, n2, change = math.sqrt(max(sq1, 0.0)), math.sqrt(max(sq2, 0.0)), math.sqrt(max(change_sq, 0.0))
    dot = (sq1 + sq2 - change_sq) / 2.0  # error of the order of 1e-16·(sq1 + sq2): fine for a cosine

    def factor(g1: np.ndarray, g2: np.ndarray, gd: np.ndarray, d: np.ndarray) -> FactorStats:
        t1, t2, td = float(np.trace(g1)), float(np.trace(g2)), float(np.trace(gd))
        return FactorStats(math.sqrt(max(t1, 0.0)), math.sqrt(max(t2, 0.0)), (t1 + t2 - td) / 2.0,
                           math.sqrt(max(td, 0.0)), float(np.max(np.abs(d))) if d.size else 0.0)

    return UpdateComparison(n1, n2, change, _cosine(dot, n1, n2),
                            factor(g_a1, g_a2, g_da, da), factor(g_b1, g_b2, g_db, db))


def compare_updates(a1: np.ndarray, b1: np.ndarray, s1: float,
                    a2: np.ndarray, b2: np.ndarray, s2: float) -> UpdateComparison:
    """Compare ΔW₁ = s₁B₁A₁ with ΔW₂ = s₂B₂A₂ (factors as returned by :func:`as_factors`)."""
    if a1.shape == a2.shape and b1.shape == b2.shape and s1 == s2:
        return _same_shape(a1, b1, s1, a2, b2, s2)
    sq1 = s1 * s1 * _gram_dot(b1, a1, b1, a1)
    sq2 = s2 * s2 * _gram_dot(b2, a2, b2, a2)
    dot = s1 * s2 * _gram_dot(b1, a1, b2, a2)
    n1, n2 = math.sqrt(max(sq1, 0.0)), math.sqrt(max(sq2, 0.0))
    return UpdateComparison(n1, n2, math.sqrt(max(sq1 + sq2 - 2.0 * dot, 0.0)), _cosine(dot, n1, n2))
