"""The arithmetic of a merge: LoRA updates combined as concatenated factors, reduced in rank through r × r
algebra, dense tensors added in float64 and rounded once, and the lossy strategies (PEFT's own).

For LoRA modules ΔW = s·B·A, so a sum of updates is a wider LoRA module:

    s₁B₁A₁ + s₂B₂A₂ − s₀B₀A₀ = s·[c₁B₁ | c₂B₂ | −c₀B₀] · [A₁; A₂; A₀]      with cᵢ = sᵢ / s

When the three scales are equal every cᵢ is 1: the merged factors are the inputs side by side with one sign
flipped, so every value is copied exactly, whatever the dtype. A rank reduction never forms the
d_out × d_in matrix: QR of the stacked factors, then the SVD of the R × R core (Eckart–Young optimal).
Everything here is numpy on float64; values go back to the stored dtype through :func:`to_dtype`, which
rounds once (bf16 included: round-to-odd to float32, then to nearest even, so the result is the correctly
rounded value of the float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .dtypes import to_float64

#: dtypes a merge can round float64 values back into
ROUNDABLE = frozenset({"F64", "F32", "F16", "BF16"})


def to_dtype(x: np.ndarray, dtype: str) -> bytes:
    """float64 values as little-endian ``dtype`` bytes, each correctly rounded (to nearest, ties to even)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if dtype == "F64":
        return x.astype("<f8").tobytes()
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return _bf16_bits(x).astype("<u2").tobytes()
    raise ValueError(f"cannot round values to {dtype}")


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float64 -> bfloat16 bits with a single rounding. float32 by round-to-odd keeps enough information
    (16 spare bits) for the final round-to-nearest-even to be the correct rounding of the float64."""
    f = x.astype(np.float32)                          # nearest
    back = f.astype(np.float64)
    inexact = back != x
    with np.errstate(invalid="ignore"):
        over = np.abs(back) > np.abs(x)               # rounded away from zero: step back towards zero
    bits = f.view(np.uint32).copy()
    step = inexact & over & np.isfinite(x)
    bits[step] -= 1                                   # magnitude down one ulp (sign-magnitude encoding)
    bits[inexact & np.isfinite(x)] |= 1               # round to odd: remember the value was inexact
    nan = np.isnan(x)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    rounded[nan] = 0x7FC0
    # values beyond float32's range became inf at the first step: inf is also right for bfloat16
    inf = np.isinf(f) & ~np.isinf(x)
    rounded[inf] = np.where(x[inf] > 0, 0x7F80, 0xFF80).astype(np.uint16)
    return rounded


def values(raw: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """Stored bytes as float64 of their shape."""
    return to_float64(raw, dtype).reshape(tuple(shape))


def rounding_error(exact: np.ndarray, raw: bytes, dtype: str) -> tuple[float, float]:
    """(max |stored − exact|, ‖stored − exact‖ / ‖exact‖) of values rounded into ``raw``."""
    stored = to_float64(raw, dtype).reshape(exact.shape)
    d = stored - exact
    if not d.size:
        return 0.0, 0.0
    norm = float(np.linalg.norm(exact))
    err = float(np.linalg.norm(d))
    return float(np.max(np.abs(d))), (err / norm if norm > 0 else (0.0 if err == 0 else math.inf))


# -- LoRA factors --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Factors:
    """One LoRA update: A (r × …) and B (d_out × r × …) as float64, and its scale s (ΔW = s·B·A)."""

    a: np.ndarray
    b: np.ndarray
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """A as r × d_in and B as d_out × r (conv kernels and embeddings flattened)."""
        return self.a.reshape(self.a.shape[0], -1), _b_flat(self.b)

    def dense(self) -> np.ndarray:
        a, b = self.flat()
        return self.scale * (b @ a)


def _b_flat(b: np.ndarray) -> np.ndarray:
    """B with the rank axis (axis 1) last: d_out × r (conv B is out × r × 1 × 1)."""
    return b.reshape(b.shape[0], b.shape[1], -1)[:, :, 0] if b.ndim > 2 else b


def _b_shape(like: np.ndarray, rank: int) -> tuple[int, ...]:
    return (like.shape[0], rank, *like.shape[2:])


def compatible(parts: Sequence[Factors]) -> bool:
    """Whether the updates act on the same weight (same A trailing shape, same B shape but for the rank)."""
    first = parts[0]
    return all(p.a.shape[1:] == first.a.shape[1:] and p.b.shape[0] == first.b.shape[0]
               and p.b.shape[2:] == first.b.shape[2:] and p.b.shape[1] == p.a.shape[0]
               and all(d == 1 for d in p.b.shape[2:]) for p in parts)


def concatenate(parts: Sequence[tuple[Factors, float]], scale: float) -> Factors:
    """Σ wᵢ·ΔWᵢ as one update of scale ``scale``: B blocks multiplied by wᵢ·sᵢ/scale (exactly 1 or −1 when
    the scales are equal), A blocks as they are."""
    a = np.concatenate([p.a for p, _ in parts], axis=0)
    b = np.concatenate([p.b * (w * p.scale / scale) if w * p.scale != scale else p.b for p, w in parts], axis=1)
    return Factors(a, b, scale)


def lowrank_norm(b: np.ndarray, a: np.ndarray) -> float:
    """‖B·A‖_F through r × r Gram matrices."""
    return math.sqrt(max(float(np.sum((b.T @ b) * (a @ a.T))), 0.0))


def update_distance(x: Factors, y: Factors) -> float:
    """‖ΔW_x − ΔW_y‖_F without forming either. For factors of the same shape the difference is written as
    δB·A_x + B_y·δA (δ = x − y, y's B rescaled to x's scale), whose Gram terms are as small as the difference
    itself: no cancellation, so a rounding-sized difference is measured to its own precision. Otherwise it is
    the update [s_x B_x | −s_y B_y]·[A_x; A_y]."""
    xa, xb = x.flat()
    ya, yb = y.flat()
    if xa.shape == ya.shape and xb.shape == yb.shape and x.scale != 0:
        yb = yb * (y.scale / x.scale) if y.scale != x.scale else yb
        return abs(x.scale) * lowrank_norm(np.concatenate([xb - yb, yb], axis=1), np.concatenate([xa, xa - ya], axis=0))
    return lowrank_norm(np.concatenate([x.scale * xb, -y.scale * yb], axis=1), np.concatenate([xa, ya], axis=0))


@dataclass(frozen=True)
class Reduced:
    factors: Factors
    singular_values: np.ndarray  # of ΔW / s, all of them (descending)

    @property
    def truncation_residual(self) -> float:
        """‖ΔW − ΔW_N‖ / ‖ΔW‖ from the discarded singular values (the Eckart–Young optimum)."""
        s = self.singular_values
        total = float(np.sum(s * s))
        n = self.factors.rank
        return math.sqrt(float(np.sum(s[n:] ** 2)) / total) if total > 0 else 0.0


def reduce_rank(f: Factors, rank: int) -> Reduced:
    """The best rank-``rank`` approximation of ``f`` (same scale): B = Q_B·R_B, Aᵀ = Q_A·R_A, the R × R core
    R_B·R_Aᵀ = U·Σ·Vᵀ, then B' = Q_B·U_N·√Σ_N and A' = √Σ_N·V_Nᵀ·Q_Aᵀ."""
    a, b = f.flat()
    qb, rb = np.linalg.qr(b)
    qa, ra = np.linalg.qr(a.T)
    u, sigma, vt = np.linalg.svd(rb @ ra.T)
    n = max(0, min(rank, sigma.size))
    root = np.sqrt(sigma[:n])
    b2 = (qb @ u[:, :n]) * root
    a2 = (root[:, None] * vt[:n]) @ qa.T
    return Reduced(Factors(a2.reshape((n, *f.a.shape[1:])), b2.reshape(_b_shape(f.b, n)), f.scale), sigma)


def factorise_dense(w: np.ndarray, rank: int, like: Factors, scale: float) -> Reduced:
    """A dense update (d_out × d_in, already including the scale) as factors of rank ``rank`` and ``scale``
    (truncated SVD: what the lossy strategies end with)."""
    u, sigma, vt = np.linalg.svd(w / scale, full_matrices=False)
    n = max(0, min(rank, sigma.size))
    root = np.sqrt(sigma[:n])
    b2 = u[:, :n] * root
    a2 = root[:, None] * vt[:n]
    return Reduced(Factors(a2.reshape((n, *like.a.shape[1:])), b2.reshape(_b_shape(like.b, n)), scale), sigma)


# -- the lossy strategies ------------------------------------------------------------------------------------
LOSSY = ("ties", "dare_ties", "dare_linear", "svd")


def lossy_combine(strategy: str, tasks: Sequence[np.ndarray], weights: Sequence[float], density: float | None,
                  seed: int) -> np.ndarray:
    """Combine task vectors (each side's change from the merge base, float64) with PEFT's implementation of
    ``strategy`` (``svd``: PEFT's weighted task arithmetic; the caller truncates). Needs torch and peft."""
    try:
        import torch
        from peft.utils import merge_utils
    except ImportError as e:
        raise ImportError(f"the {strategy!r} merge strategy uses PEFT's implementation: pip install "
                          f"'adaptvc[torch]' ({e.name} is missing)") from None
    t = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) for x in tasks]
    w = torch.tensor(list(weights), dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if strategy == "ties":
            out = merge_utils.ties(t, w, density)
        elif strategy == "dare_ties":
            out = merge_utils.dare_ties(t, w, density)
        elif strategy == "dare_linear":
            out = merge_utils.dare_linear(t, w, density)
        elif strategy == "svd":
            out = merge_utils.task_arithmetic(t, w)
        else:
            raise ValueError(f"unknown lossy strategy {strategy!r}")
    return out.numpy().astype(np.float64, copy=False)
