"""How the config of a merged adapter is made: three-way per key, and each LoRA module's rank and scale stated
the way PEFT reads them.

PEFT gives a module the rank and alpha of the first ``rank_pattern`` / ``alpha_pattern`` key that matches the
end of its name (``peft.utils.other.get_pattern_key``), else ``r`` / ``lora_alpha``; its scale is
``alpha / r`` (``alpha / √r`` with ``use_rslora``). :func:`state_ranks` keeps the patterns when they already
give every module of the merged adapter its rank and scale, and otherwise rewrites them with one entry per
module that differs, each matching that module alone, with an alpha chosen so that PEFT's own division gives
exactly the scale wanted.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import AdaptvcError
from ..peft_layout import PEFT_PREFIX


def pattern_value(config: dict[str, Any], key_field: str, module: str, default: Any) -> Any:
    """PEFT's rule for rank_pattern / alpha_pattern (``peft.utils.other.get_pattern_key``): the first
    pattern, in the config's order, that matches the end of the module's name."""
    key = module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module
    patterns = config.get(key_field) or {}
    if not isinstance(patterns, dict):
        return default
    for pattern, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({pattern})$", key):
                return value
        except re.error:
            continue
    return default


def module_scale(config: dict[str, Any], module: str, rank: int) -> float:
    alpha = pattern_value(config, "alpha_pattern", module, config.get("lora_alpha", 8))
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        return math.nan
    if rank <= 0:
        return 0.0
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def module_rank(config: dict[str, Any], module: str) -> Any:
    return pattern_value(config, "rank_pattern", module, config.get("r", 8))


def finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


class _Missing:
    """The value of a config key one version does not have (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "(absent)"


#: a config key's value in a version that lacks the key
MISSING: Any = _Missing()


def short_value(v: Any) -> str:
    """A config value for a one-line message: JSON, shortened; ``(absent)`` for :data:`MISSING`."""
    text = "(absent)" if v is MISSING else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def merge_sets(vo: Any, va: Any, vb: Any) -> list | None:
    """Three-way merge of lists of names: an element is kept if both sides have it, or one side added it."""
    o = set(vo) if isinstance(vo, list) else set()
    a = list(va) if isinstance(va, list) else []
    b = list(vb) if isinstance(vb, list) else []
    sa, sb = set(a), set(b)
    keep = [x for x in dict.fromkeys(a + b) if (x in sa and x in sb) or (x in sa and x not in o)
            or (x in sb and x not in o)]
    return keep if keep or isinstance(va, list) or isinstance(vb, list) else None


def merge_patterns(vo: Any, va: Any, vb: Any) -> dict:
    """Pattern dicts merged key by key; a pattern changed differently on both sides is dropped (the merge
    states each module's rank and scale exactly afterwards)."""
    o = vo if isinstance(vo, dict) else {}
    a = va if isinstance(va, dict) else {}
    b = vb if isinstance(vb, dict) else {}
    out: dict[str, Any] = {}
    for k in dict.fromkeys([*a, *b]):
        x, y, z = o.get(k), a.get(k), b.get(k)
        if y == z:
            v = y
        elif y == x:
            v = z
        elif z == x:
            v = y
        else:
            continue
        if v is not None:
            out[k] = v
    return out


# -- stating each module's rank and scale in the config ----------------------------------------------------------
def alpha_for(scale: float, rank: int, rslora: bool) -> tuple[float | int, bool]:
    """An alpha for which PEFT's own formula (alpha / r, or alpha / √r) gives exactly ``scale``."""
    denom = math.sqrt(rank) if rslora else rank
    c = scale * denom
    candidates: list[float | int] = []
    if math.isfinite(c) and abs(c - round(c)) <= 1e-9 * max(1.0, abs(c)):
        candidates.append(round(c))
    candidates.append(c)
    up = down = c
    for _ in range(8):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        candidates += [up, down]
    for cand in candidates:
        if cand / denom == scale:
            return cand, True
    return c, False


def _needs(config: dict[str, Any], modules: dict[str, tuple[int, float]]) -> list[str]:
    """Modules whose rank or scale the config does not give exactly."""
    bad = []
    for module, (rank, scale) in modules.items():
        r = module_rank(config, module)
        if r != rank or module_scale(config, module, rank) != scale:
            bad.append(module)
    return bad


def _pattern_key(module: str, anchored: bool) -> str:
    key = module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module
    return "^" + re.escape(key) if anchored else key


def state_ranks(config: dict[str, Any], modules: dict[str, tuple[int, float]]) -> tuple[dict[str, Any], list[str]]:
    """``config`` with ``rank_pattern``/``alpha_pattern`` that give every module exactly its (rank, scale);
    returns the config and the modules whose scale could only be approximated. Patterns already right are
    kept; otherwise the patterns are rewritten with one entry per module that differs from ``r`` /
    ``lora_alpha``, each matching that module alone (so their order does not matter to PEFT)."""
    if not _needs(config, modules):
        return config, []
    cfg = dict(config)
    rslora = bool(cfg.get("use_rslora"))
    r0 = cfg.get("r", 8)
    alpha0 = cfg.get("lora_alpha", 8)
    approx: list[str] = []
    anchored: set[str] = set()
    for _ in range(2):
        ranks: dict[str, int] = {}
        alphas: dict[str, float | int] = {}
        for module, (rank, scale) in sorted(modules.items()):
            key = _pattern_key(module, module in anchored)
            if rank != r0:
                ranks[key] = rank
            alpha, exact = alpha_for(scale, rank, rslora)
            if not exact and module not in approx:
                approx.append(module)
            if isinstance(alpha0, (int, float)) and not isinstance(alpha0, bool) and \
                    (alpha0 / (math.sqrt(rank) if rslora else rank)) == scale:
                continue
            alphas[key] = alpha
        cfg["rank_pattern"], cfg["alpha_pattern"] = ranks, alphas
        wrong = [m for m in _needs(cfg, modules) if m not in approx]
        if not wrong:
            return cfg, approx
        anchored.update(wrong)  # a module's own name also matched another one: match it exactly
    raise AdaptvcError(f"cannot state the rank and scale of {wrong[0]} in rank_pattern/alpha_pattern; this is a "
                       "bug in adaptvc, please report it")
