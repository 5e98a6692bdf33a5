"""What changed between two adapter versions: per tensor, per LoRA module (ΔW = s·B·A), and in the config.

Every number is defined in ``docs/diff.md`` and checked against a dense float64 reference in
``tests/test_diff.py``. Tensors with equal blob ids are ``unchanged`` and are not read for tensor numbers;
every tensor that is read is read once, converted to float64 in bounded chunks.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, TypeVar

import numpy as np

from ..ops.status import config_changes
from ..peft_layout import CONFIG_NAME
from ..progress import SILENT, Progress, Serialised
from .dtypes import Workspace
from .lowrank import (
    adalora_scale,
    as_factors,
    compare_updates,
    kron_comparison,
    loha_factors,
    lora_modules,
    lora_scale,
    lycoris_modules,
    lycoris_rank_and_scale,
)
from .reader import WORKTREE, TensorReader

#: elements converted to float64 at a time for per-tensor numbers: memory stays flat for any tensor size
CHUNK_ELEMENTS = 1 << 20
STATUSES = ("added", "removed", "modified", "unchanged")
T = TypeVar("T")
R = TypeVar("R")


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


@dataclass(frozen=True)
class TensorDiff:
    name: str
    status: str
    dtype_a: str | None = None
    dtype_b: str | None = None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    norm_a: float | None = None
    norm_b: float | None = None
    delta_norm: float | None = None
    rel_delta: float | None = None
    cosine: float | None = None
    max_abs_delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "norm_a": _finite(self.norm_a), "norm_b": _finite(self.norm_b),
            "delta_norm": _finite(self.delta_norm), "rel_delta": _finite(self.rel_delta),
            "cosine": _finite(self.cosine), "max_abs_delta": _finite(self.max_abs_delta),
        }


@dataclass(frozen=True)
class ModuleDiff:
    name: str
    status: str  # "modified" or "unchanged"
    rank_a: int
    rank_b: int
    scale_a: float
    scale_b: float
    delta_w_norm_a: float
    delta_w_norm_b: float
    delta_w_change: float
    delta_w_rel_change: float | None
    delta_w_cosine: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "rank_a": self.rank_a, "rank_b": self.rank_b,
            "scale_a": self.scale_a, "scale_b": self.scale_b,
            "delta_w_norm_a": _finite(self.delta_w_norm_a), "delta_w_norm_b": _finite(self.delta_w_norm_b),
            "delta_w_change": _finite(self.delta_w_change),
            "delta_w_rel_change": _finite(self.delta_w_rel_change),
            "delta_w_cosine": _finite(self.delta_w_cosine),
        }


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    config: dict[str, list[Any]]
    tensors: list[TensorDiff]
    modules: list[ModuleDiff]
    peft_types: dict[str, str | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        counts = {s: sum(1 for t in self.tensors if t.status == s) for s in STATUSES}
        delta_sq = sum(t.delta_norm ** 2 for t in self.tensors if t.delta_norm is not None)
        change_sq = sum(m.delta_w_change ** 2 for m in self.modules)
        norm_a_sq = sum(m.delta_w_norm_a ** 2 for m in self.modules)
        return {
            "tensors": counts,
            "modules": {"compared": len(self.modules),
                        "changed": sum(1 for m in self.modules if m.status == "modified")},
            "config_keys_changed": len(self.config),
            "delta_norm_total": _finite(math.sqrt(delta_sq)),
            "delta_w_change_total": _finite(math.sqrt(change_sq)) if self.modules else None,
            "delta_w_rel_change_total": _finite(math.sqrt(change_sq / norm_a_sq)) if norm_a_sq > 0 else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "config": self.config,
            "tensors": [t.to_dict() for t in self.tensors],
            "modules": [m.to_dict() for m in self.modules],
            "summary": self.summary(),
        }

    @property
    def changed(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.status != "unchanged"]


# -- per-tensor numbers -------------------------------------------------------------------------------------
@dataclass
class _Sums:
    na: float = 0.0
    nb: float = 0.0
    dot: float = 0.0
    delta: float = 0.0
    max_abs: float = 0.0

    def add(self, xa: np.ndarray, xb: np.ndarray) -> None:
        d = xb - xa
        na, nb, delta = float(xa @ xa), float(xb @ xb), float(d @ d)
        self.na += na
        self.nb += nb
        # ⟨a, b⟩ = (‖a‖² + ‖b‖² − ‖b − a‖²)/2: one pass fewer; its error, ~1e-16·(‖a‖² + ‖b‖²), is ~1e-16
        # of the cosine it feeds (the change itself is summed directly, never by subtraction)
        self.dot += (na + nb - delta) / 2.0
        self.delta += delta
        if d.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d, out=d))))


def _pair_numbers(name: str, status: str, ea: Any, eb: Any, sums: _Sums) -> TensorDiff:
    na, nb = math.sqrt(sums.na), math.sqrt(sums.nb)
    delta = math.sqrt(sums.delta)
    return TensorDiff(
        name, status, ea.dtype, eb.dtype, ea.shape, eb.shape, na, nb, delta,
        rel_delta=delta / na if na > 0 else None,
        cosine=max(-1.0, min(1.0, sums.dot / (na * nb))) if na > 0 and nb > 0 else None,
        max_abs_delta=sums.max_abs,
    )


def _norm(view: TensorReader, name: str, ws: Workspace) -> float | None:
    if not view.numeric(name):
        return None
    return math.sqrt(sum(float(x @ x) for x in view.stream(name, ws, "x", CHUNK_ELEMENTS)))


def _planned_bytes(a: TensorReader, b: TensorReader, names: list[str], unchanged: set[str]) -> int:
    """The bytes :func:`diff_versions` will read: what its progress bar counts up to."""
    total = 0
    in_modules: set[str] = set()
    both = {n for n in names if n in a.tensors and n in b.tensors}
    for module, mn in lora_modules(both).items():
        factors = (mn.a, mn.b)
        if not all(v.numeric(n) for v in (a, b) for n in factors):
            continue
        in_modules.update(factors)
        e_name = f"{module}.lora_E"
        adalora = e_name in a.tensors and e_name in b.tensors and a.numeric(e_name) and b.numeric(e_name)
        watched = (*factors, e_name) if adalora else factors
        total += sum(a.tensors[n].size for n in factors)
        if not all(n in unchanged for n in watched):
            total += sum(b.tensors[n].size for n in factors)
        if adalora:
            total += a.tensors[e_name].size + b.tensors[e_name].size
    for parts in lycoris_modules(both).values():
        part_names = sorted(parts.values())
        if any(p.endswith(("_t1", "_t2")) for p in parts) or not all(v.numeric(n) for v in (a, b)
                                                                     for n in part_names):
            continue
        total += sum(a.tensors[n].size for n in part_names)
        if not all(n in unchanged for n in part_names):
            total += sum(b.tensors[n].size for n in part_names)
    for n in names:
        ea, eb = a.tensors.get(n), b.tensors.get(n)
        if ea is None:
            total += eb.size if b.numeric(n) else 0
        elif eb is None:
            total += ea.size if a.numeric(n) else 0
        elif n not in unchanged and n not in in_modules and ea.shape == eb.shape and a.numeric(n) and b.numeric(n):
            total += ea.size + eb.size
    return total


def matches_anywhere(name: str, pattern: str) -> bool:
    """Whether the glob ``pattern`` matches anywhere in ``name``: fnmatch of ``*PATTERN*`` against the whole
    name, whatever the pattern starts or ends with (``q_proj``, ``*q_proj``, ``layers.1.*`` and a full name all
    match the tensors that contain them)."""
    return fnmatchcase(name, f"*{pattern}*")


def diff_versions(a: TensorReader, b: TensorReader, pattern: str | None = None,
                  progress: Progress = SILENT) -> Diff:
    """Compare two versions. ``pattern`` (a glob, matched anywhere in the name) limits the tensors. A config
    value the numbers need that is not what PEFT reads there (``"lora_alpha": "abc"``) raises
    :class:`~adaptvc.errors.InvalidConfigError` naming the key, the config and its version."""
    names = sorted(a.tensors.keys() | b.tensors.keys())
    if pattern:
        names = [n for n in names if matches_anywhere(n, pattern)]
    unchanged = {n for n in names if n in a.tensors and n in b.tensors and
                 (a.tensors[n].blob, a.tensors[n].dtype, a.tensors[n].shape) ==
                 (b.tensors[n].blob, b.tensors[n].dtype, b.tensors[n].shape)}
    progress.begin("diff", _planned_bytes(a, b, names, unchanged))
    a.progress = b.progress = Serialised(progress)  # modules are compared on several threads
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1, user_api="blas"):  # see WORKERS
            return _diff(a, b, names)
    finally:
        a.progress = b.progress = SILENT
        progress.end()


def _diff(a: TensorReader, b: TensorReader, names: list[str]) -> Diff:
    results: dict[str, TensorDiff] = {}
    ws = Workspace()
    for n in names:
        ea, eb = a.tensors.get(n), b.tensors.get(n)
        if ea is None:
            results[n] = TensorDiff(n, "added", None, eb.dtype, None, eb.shape, norm_b=_norm(b, n, ws))
        elif eb is None:
            results[n] = TensorDiff(n, "removed", ea.dtype, None, ea.shape, None, norm_a=_norm(a, n, ws))
        elif (ea.blob, ea.dtype, ea.shape) == (eb.blob, eb.dtype, eb.shape):
            results[n] = TensorDiff(n, "unchanged", ea.dtype, eb.dtype, ea.shape, eb.shape)

    both = {n for n in names if n in a.tensors and n in b.tensors}
    found = _in_parallel(lambda item, w: _module_diff(a, b, item[0], item[1].a, item[1].b, results, w),
                         sorted(lora_modules(both).items()))
    modules: list[ModuleDiff] = [d for d in found if d is not None]

    for module, parts in sorted(lycoris_modules(both).items()):
        diff = _lycoris_diff(a, b, module, parts, results)
        if diff is not None:
            modules.append(diff)

    for n in names:  # modified tensors outside LoRA modules (DoRA magnitudes, IA3 vectors, LoHa/LoKr factors)
        if n in results:
            continue
        ea, eb = a.tensors[n], b.tensors[n]
        if ea.shape != eb.shape or not (a.numeric(n) and b.numeric(n)):
            results[n] = TensorDiff(n, "modified", ea.dtype, eb.dtype, ea.shape, eb.shape)
            continue
        sums = _Sums()
        for xa, xb in zip(a.stream(n, ws, "x", CHUNK_ELEMENTS), b.stream(n, ws, "y", CHUNK_ELEMENTS), strict=True):
            sums.add(xa, xb)
        results[n] = _pair_numbers(n, "modified", ea, eb, sums)

    config: dict[str, list[Any]] = {}
    folders = sorted(set(a.adapter_folders) | set(b.adapter_folders))
    for folder in folders:
        for key, change in config_changes(a.config(folder), b.config(folder)).items():
            config[f"{folder}/{key}" if folder else key] = change
    peft_types = {folder: (b.config(folder) or a.config(folder)).get("peft_type")
                  for folder in folders}
    return Diff(a.label, b.label, config, [results[n] for n in names], modules, peft_types)


#: threads comparing modules at once (each with one BLAS thread: many r × r products parallelise better across
#: modules than inside one, and a BLAS whose threads outnumber free cores spins: 5× slower on a busy machine)
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _in_parallel(fn: Callable[[T, Workspace], R], items: list[T]) -> list[R]:
    """``fn(item, workspace)`` for every item, on up to :data:`WORKERS` threads (a workspace each); results in
    the items' order. The first error is raised once every running call has finished."""
    if len(items) <= 1 or WORKERS == 1:
        ws = Workspace()
        return [fn(item, ws) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def run(item: T) -> R:
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace()
        return fn(item, ws)

    with ThreadPoolExecutor(min(WORKERS, len(items))) as pool:
        return list(pool.map(run, items))


def _config_where(view: TensorReader, folder: str) -> str:
    """A config and its version, for an error message: ``sub/adapter_config.json of version 1a2b3c4d5e6f``."""
    path = f"{folder}/{CONFIG_NAME}" if folder else CONFIG_NAME
    return f"{path} of {'the work tree' if view.label == WORKTREE else 'version ' + view.label[:12]}"


def _split_folder(name: str) -> tuple[str, str]:
    """Sub-folder adapters' tensors are named ``folder/tensor``; tensor names themselves have no '/'."""
    folder, _, rest = name.rpartition("/")
    return folder, rest


def _module_diff(a: TensorReader, b: TensorReader, module: str, name_a: str, name_b: str,
                 results: dict[str, TensorDiff], ws: Workspace) -> ModuleDiff | None:
    names = (name_a, name_b)
    if not all(v.numeric(n) for v in (a, b) for n in names):
        return None
    folder, local = _split_folder(module)
    # AdaLoRA: ΔW = B·(A ⊙ E)·α/ranknum, with the singular values E beside the factors
    e_name = f"{module}.lora_E"
    adalora = e_name in a.tensors and e_name in b.tensors and a.numeric(e_name) and b.numeric(e_name)
    watched = (*names, e_name) if adalora else names
    unchanged = all(results.get(n) is not None and results[n].status == "unchanged" for n in watched)
    A1, B1 = a.values(name_a, ws, "a1"), a.values(name_b, ws, "b1")
    A2, B2 = (A1, B1) if unchanged else (b.values(name_a, ws, "a2"), b.values(name_b, ws, "b2"))
    f1, f2 = as_factors(A1, B1), as_factors(A2, B2)
    cmp = None
    if f1 is not None and f2 is not None:
        (a1, b1), (a2, b2) = f1, f2
        if adalora:
            e1, e2 = a.values(e_name).reshape(-1, 1), b.values(e_name).reshape(-1, 1)
            if e1.shape[0] != a1.shape[0] or e2.shape[0] != a2.shape[0]:
                return None
            a1, a2 = a1 * e1, a2 * e2
            s1 = adalora_scale(a.config(folder), a1.shape[0], _config_where(a, folder))
            s2 = adalora_scale(b.config(folder), a2.shape[0], _config_where(b, folder))
        else:
            s1 = lora_scale(a.config(folder), local, a1.shape[0], _config_where(a, folder))
            s2 = lora_scale(b.config(folder), local, a2.shape[0], _config_where(b, folder))
        cmp = compare_updates(a1, b1, s1, a2, b2, s2)
    # the factors' own tensor numbers: from the module's Gram matrices when it has them, else directly
    stats_a = None if adalora else cmp and cmp.factor_a  # (AdaLoRA's Gram factor is A ⊙ E, not A)
    for n, x1, x2, stats in ((name_a, A1, A2, stats_a), (name_b, B1, B2, cmp and cmp.factor_b)):
        if n in results:
            continue
        e1, e2 = a.tensors[n], b.tensors[n]
        if x1.shape != x2.shape:
            results[n] = TensorDiff(n, "modified", e1.dtype, e2.dtype, e1.shape, e2.shape)
            continue
        sums = _Sums()
        if stats is not None:
            sums.na, sums.nb, sums.dot = stats.norm_1 ** 2, stats.norm_2 ** 2, stats.dot
            sums.delta, sums.max_abs = stats.delta ** 2, stats.max_abs_delta
        else:
            sums.add(x1.reshape(-1), x2.reshape(-1))
        results[n] = _pair_numbers(n, "modified", e1, e2, sums)
    if cmp is None:
        return None
    status = "unchanged" if unchanged and s1 == s2 else "modified"
    return ModuleDiff(module, status, a1.shape[0], a2.shape[0], s1, s2, cmp.norm_a, cmp.norm_b, cmp.change,
                      cmp.rel_change, cmp.cosine)


def _lycoris_diff(a: TensorReader, b: TensorReader, module: str, parts: dict[str, str],
                  results: dict[str, TensorDiff]) -> ModuleDiff | None:
    """Module numbers for LoHa (Hadamard of two low-rank products) and LoKr (Kronecker product); the
    factors' own tensor numbers are computed like any other modified tensor."""
    names = sorted(parts.values())
    if any(p.endswith(("_t1", "_t2")) for p in parts) or not all(v.numeric(n) for v in (a, b) for n in names):
        return None  # CP-decomposed conv factors: tensor numbers only
    folder, local = _split_folder(module)
    unchanged = all(results.get(n) is not None and results[n].status == "unchanged" for n in names)
    r1, s1 = lycoris_rank_and_scale(a.config(folder), local, _config_where(a, folder))
    r2, s2 = lycoris_rank_and_scale(b.config(folder), local, _config_where(b, folder))
    va = {p: a.values(n) for p, n in parts.items()}
    vb = va if unchanged else {p: b.values(n) for p, n in parts.items()}
    try:
        if "hada_w1_a" in parts:
            fa = loha_factors(va["hada_w1_a"], va["hada_w1_b"], va["hada_w2_a"], va["hada_w2_b"])
            fb = loha_factors(vb["hada_w1_a"], vb["hada_w1_b"], vb["hada_w2_a"], vb["hada_w2_b"])
            if fa is None or fb is None:
                return None
            cmp = compare_updates(fa[0], fa[1], s1, fb[0], fb[1], s2)
        else:
            def dense(v: dict, w: str) -> np.ndarray:
                return v[w] if w in v else v[f"{w}_a"] @ v[f"{w}_b"]

            cmp = kron_comparison((dense(va, "lokr_w1"), dense(vb, "lokr_w1")),
                                  (dense(va, "lokr_w2"), dense(vb, "lokr_w2")), s1, s2)
    except (KeyError, ValueError):
        return None  # factors missing or of different shapes: tensor numbers only
    status = "unchanged" if unchanged and s1 == s2 else "modified"
    return ModuleDiff(module, status, r1, r2, s1, s2, cmp.norm_a, cmp.norm_b, cmp.change, cmp.rel_change,
                      cmp.cosine)
