"""The plan of a three-way merge: units, the decision for each, the combinations, the merged snapshot.

Decisions are made from blob ids (nothing is read for a unit that did not change on both sides); the
combinations are computed in memory; :func:`build_snapshot` writes the new blobs only once the caller has
seen that there is no conflict.

Units of a merge (``docs/merge.md``):

* a LoRA module — A, B and its scale together (merging A and B separately is not linear in ΔW). Unchanged
  on both sides: kept; changed on one side: that side's tensors, the same blobs; changed on both:
  ΔW_ours + ΔW_theirs − ΔW_base exactly, as concatenated factors whose rank and scale the merged config
  states through ``rank_pattern``/``alpha_pattern`` (``--rank N`` reduces it, recording the residual);
* a LoHa/LoKr module or a DoRA module (its magnitude is not additive): changed on both sides is a conflict;
* any other tensor (modules_to_save, IA3 vectors, prompt embeddings): changed on both sides,
  A + B − O in float64, rounded once to the stored dtype (the rounding is reported);
* a config key: three-way per top-level key (lists of module names merged as sets); a key changed
  differently on both sides is a conflict;
* any other file (model card, tokenizer files): three-way by content; changed differently is a conflict.

A conflict is resolved with ``strategy="ours"|"theirs"`` (every unit changed on both sides takes that side)
or per glob (``ours=["*lm_head*"]``, ``theirs=["adapter_config.json:lora_dropout"]``). The lossy strategies
(``ties``, ``dare_ties``, ``dare_linear``, ``svd``) apply PEFT's implementations to the units changed on both
sides and only when asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from ..errors import AdaptvcError, InvalidInputError
from ..objects import FileEntry, Snapshot, TensorEntry
from ..parsing import JsonError, parse_json
from ..peft_layout import CONFIG_NAME, SET_VALUED_CONFIG_KEYS, WEIGHTS_NAME, is_training_state
from ..storage.base import MAX_METADATA_OBJECT, ObjectStore
from ..tensors.lowrank import LORA_TENSOR, LYCORIS_TENSOR, lora_scale
from .merge_config import MISSING, finite, merge_patterns, merge_sets, short_value, state_ranks

#: the strategies for units changed on both sides ("combine": the exact three-way combination)
STRATEGIES = ("combine", "ours", "theirs", "ties", "dare_ties", "dare_linear", "svd")
LOSSY = ("ties", "dare_ties", "dare_linear", "svd")
#: config keys that say which rank and scale each LoRA module has: set by the merge itself
SCALE_KEYS = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern")
#: config keys whose list value PEFT treats as a set: merged as sets (the one list, shared with diff and status)
SET_KEYS = SET_VALUED_CONFIG_KEYS
#: config keys that describe the writer, not the adapter: ours is kept when both changed them
INFORMATIONAL_KEYS = ("peft_version",)
#: adapter types whose non-factor tensors may be added (A + B − O) when both sides changed them
ADDITIVE_TYPES = ("LORA", "IA3", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "LN_TUNING")
MAX_GLOBS = 256


class MergeError(AdaptvcError):
    """A merge refused before anything was written (different base models, PEFT types, unrelated histories)."""


@dataclass(frozen=True)
class Conflict:
    name: str    # a module, a tensor, ``adapter_config.json:KEY`` or a file path
    kind: str    # "module" | "tensor" | "config" | "file"
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Combined:
    """A unit changed on both sides and computed: its rank (LoRA), whether the stored values are exactly the
    combination, and the relative error ‖stored − exact‖/‖exact‖ (rounding, a rank reduction, a lossy
    strategy's truncation)."""

    name: str
    kind: str                  # "lora" | "tensor"
    rank: int | None
    exact: bool
    residual: float | None
    max_abs_rounding: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"exact": self.exact, "residual": self.residual}
        if self.rank is not None:
            out["rank"] = self.rank
        if self.max_abs_rounding is not None:
            out["max_abs_rounding"] = self.max_abs_rounding
        return out


@dataclass(frozen=True)
class MergeOptions:
    """How units changed on both sides are merged. ``ours``/``theirs``: globs of units (module, tensor,
    ``adapter_config.json:KEY``, file path) that take that side; ``rank``: reduce combined LoRA modules to
    this rank; ``weights``/``density``/``seed``: for the lossy strategies."""

    strategy: str = "combine"
    ours: tuple[str, ...] = ()
    theirs: tuple[str, ...] = ()
    rank: int | None = None
    weights: tuple[float, float] | None = None
    density: float | None = None
    seed: int | None = None

    def check(self) -> MergeOptions:
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy {self.strategy!r}", f"is not one of {', '.join(STRATEGIES)}")
        if len(self.ours) + len(self.theirs) > MAX_GLOBS:
            raise InvalidInputError("--ours/--theirs", f"accept at most {MAX_GLOBS} globs")
        for g in (*self.ours, *self.theirs):
            if not isinstance(g, str) or not g or len(g) > 1024:
                raise InvalidInputError(f"glob {str(g)[:40]!r}", "must be 1 to 1024 characters")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise InvalidInputError("--rank", "must be a whole number of at least 1")
        lossy = self.strategy in LOSSY
        if self.weights is not None:
            if not lossy:
                raise InvalidInputError("--weights", f"apply to the lossy strategies ({', '.join(LOSSY)})")
            if len(self.weights) != 2 or not all(isinstance(w, (int, float)) and math.isfinite(w)
                                                 for w in self.weights):
                raise InvalidInputError("--weights", "must be two finite numbers: OURS,THEIRS")
        if self.density is not None:
            if self.strategy not in ("ties", "dare_ties", "dare_linear"):
                raise InvalidInputError("--density", "applies to ties, dare_ties and dare_linear")
            if not (isinstance(self.density, (int, float)) and 0 < self.density <= 1):
                raise InvalidInputError("--density", "must be in (0, 1]")
        elif self.strategy in ("ties", "dare_ties", "dare_linear"):
            raise InvalidInputError(f"--strategy {self.strategy}", "needs --density (the fraction of values kept)")
        if self.seed is not None and not lossy:
            raise InvalidInputError("--seed", "applies to the lossy strategies")
        return self

    def side_for(self, names: Sequence[str]) -> str | None:
        """"ours"/"theirs" when a glob names one of ``names``; refused when globs name both sides."""
        o = any(fnmatchcase(n, g) for g in self.ours for n in names)
        t = any(fnmatchcase(n, g) for g in self.theirs for n in names)
        if o and t:
            raise InvalidInputError(f"{names[0]!r}", "is named by both --ours and --theirs")
        return "ours" if o else "theirs" if t else None


# -- reading a version ----------------------------------------------------------------------------------------
def stored_config(store: ObjectStore, snapshot: Snapshot, path: str = CONFIG_NAME) -> dict[str, Any]:
    """The adapter config stored at ``path`` ({} when absent or not a JSON object)."""
    entry = snapshot.file(path)
    if entry is None:
        return {}
    try:
        data = parse_json(store.read(entry.hash, MAX_METADATA_OBJECT))
    except JsonError:
        return {}
    return data if isinstance(data, dict) else {}


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


def qualified(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _local(name: str) -> tuple[str, str]:
    """(adapter folder, name inside its file) of a qualified tensor or module name."""
    folder, _, rest = name.rpartition("/")
    return folder, rest


@dataclass
class _Side:
    label: str
    snapshot: Snapshot
    configs: dict[str, dict[str, Any]]
    tensors: dict[str, TensorEntry]
    files: dict[str, FileEntry]

    @classmethod
    def read(cls, store: ObjectStore, label: str, snapshot: Snapshot) -> _Side:
        snapshot = snapshot.without(is_training_state)
        configs = {_folder(f.path): stored_config(store, snapshot, f.path) for f in snapshot.files
                   if f.path.rpartition("/")[2] == CONFIG_NAME}
        return cls(label, snapshot, configs, dict(snapshot.tensors()), {f.path: f for f in snapshot.files})

    def peft_type(self, folder: str) -> Any:
        return self.configs.get(folder, {}).get("peft_type")


EMPTY = Snapshot(())


# -- units ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    name: str
    kind: str          # "lora" | "lycoris" | "tensor"
    tensors: tuple[str, ...]
    a: str | None = None
    b: str | None = None

    @property
    def folder(self) -> str:
        return _local(self.name)[0]


def _units(names: set[str]) -> list[_Unit]:
    lora: dict[str, dict[str, str]] = {}
    lycoris: dict[str, list[str]] = {}
    for n in names:
        m = LORA_TENSOR.match(n)
        if m:
            lora.setdefault(m.group("module"), {})[m.group("factor")] = n
            continue
        m = LYCORIS_TENSOR.match(n)
        if m:
            lycoris.setdefault(m.group("module"), []).append(n)
    taken: set[str] = set()
    units: list[_Unit] = []
    for module, f in lora.items():
        if "A" not in f or "B" not in f:
            continue
        extra = [n for n in names if n.startswith(module + ".lora_") and n not in f.values()]
        members = (f["A"], f["B"], *sorted(extra))
        units.append(_Unit(module, "lora", members, f["A"], f["B"]))
        taken.update(members)
    for module, parts in lycoris.items():
        units.append(_Unit(module, "lycoris", tuple(sorted(parts))))
        taken.update(parts)
    units += [_Unit(n, "tensor", (n,)) for n in names if n not in taken]
    return sorted(units, key=lambda u: u.name)


def _scale(config: dict[str, Any], folder: str, module: str, rank: int, side: str) -> float:
    """A LoRA module's scale by the one rule diff uses too (:func:`~adaptvc.tensors.lowrank.lora_scale`); a config
    value PEFT cannot compute with is an InvalidConfigError naming the config and the side (base, ours, theirs),
    raised while planning: before anything is written."""
    path = f"{folder}/{CONFIG_NAME}" if folder else CONFIG_NAME
    side = {"base": "the merge base", "ours": "our version", "theirs": "their version"}.get(side, side)
    return lora_scale(config, module, rank, f"{path} of {side}")


def _set_like(value: Any) -> bool:
    """Whether a config value can be merged as a set: absent, null, or a list of names or numbers (a list of
    lists or objects, which a set cannot hold, is merged as any other value)."""
    return value is None or value is MISSING or (isinstance(value, list) and all(
        isinstance(x, (str, int, float)) for x in value))


def _state(side: _Side, unit: _Unit) -> tuple:
    """What a unit is on one side, comparable by ids alone: () when absent."""
    parts = tuple((n, t.blob, t.dtype, t.shape) for n in unit.tensors if (t := side.tensors.get(n)) is not None)
    if not parts:
        return ()
    if unit.kind == "lora" and unit.a in side.tensors:
        folder, local = _local(unit.name)
        a = side.tensors[unit.a]
        return (*parts, ("scale", _scale(side.configs.get(folder, {}), folder, local, a.shape[0] if a.shape else 0,
                                         side.label)))
    return parts


# -- the plan ---------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Decisions and computed values; nothing written yet."""

    unchanged: list[str] = field(default_factory=list)
    ours: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)
    combined: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    details: list[Combined] = field(default_factory=list)
    # final tensors: qualified name -> entry (its blob stored or in ``new``)
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    new: dict[str, bytes] = field(default_factory=dict)
    # the (rank, scale) each final LoRA module needs, per folder
    lora: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    # exact float64 updates of combined LoRA modules, to measure the stored result against
    exact: dict[str, Any] = field(default_factory=dict)
    factor_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    files: dict[str, FileEntry | None] = field(default_factory=dict)
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class Merger:
    def __init__(self, store: ObjectStore, base: Snapshot, ours: Snapshot, theirs: Snapshot,
                 options: MergeOptions) -> None:
        self.store = store
        self.o = _Side.read(store, "base", base)
        self.a = _Side.read(store, "ours", ours)
        self.b = _Side.read(store, "theirs", theirs)
        self.opt = options
        self.plan = Plan()

    # decisions ---------------------------------------------------------------------------------------------
    def run(self) -> Plan:
        for folder in sorted(set(self.a.configs) & set(self.b.configs)):
            ta, tb = self.a.peft_type(folder), self.b.peft_type(folder)
            if ta != tb:
                where = f" in {folder}/" if folder else ""
                raise MergeError(f"different PEFT types{where}: ours is {ta}, theirs is {tb}; adapters of "
                                 "different types cannot be merged")
        names = set(self.o.tensors) | set(self.a.tensors) | set(self.b.tensors)
        for unit in _units(names):
            self._unit(unit)
        for folder in sorted(set(self.o.configs) | set(self.a.configs) | set(self.b.configs)):
            self._config(folder)
        paths = set(self.o.files) | set(self.a.files) | set(self.b.files)
        for path in sorted(paths):
            name = path.rpartition("/")[2]
            if name not in (CONFIG_NAME, WEIGHTS_NAME):
                self._file(path)
        return self.plan

    def _take(self, unit: _Unit, side: _Side, bucket: list[str]) -> None:
        bucket.append(unit.name)
        for n in unit.tensors:
            if n in side.tensors:
                self.plan.tensors[n] = side.tensors[n]
        if unit.kind == "lora" and unit.a in side.tensors:
            folder, local = _local(unit.name)
            rank = side.tensors[unit.a].shape[0]
            scale = _scale(side.configs.get(folder, {}), folder, local, rank, side.label)
            self.plan.lora.setdefault(folder, {})[local] = (rank, scale)

    def _unit(self, unit: _Unit) -> None:
        so, sa, sb = _state(self.o, unit), _state(self.a, unit), _state(self.b, unit)
        if sa == sb:
            self._take(unit, self.a, self.plan.unchanged if sa == so else self.plan.ours)
            return
        if sa == so:
            self._take(unit, self.b, self.plan.theirs)
            return
        if sb == so:
            self._take(unit, self.a, self.plan.ours)
            return
        side = self.opt.side_for(unit.tensors if unit.kind == "tensor" else (unit.name, *unit.tensors)) or \
            (self.opt.strategy if self.opt.strategy in ("ours", "theirs") else None)
        if side is not None:
            self._take(unit, self.a if side == "ours" else self.b, self.plan.ours if side == "ours" else
                       self.plan.theirs)
            return
        reason = self._why_not(unit, sa, sb)
        if reason is not None:
            self.plan.conflicts.append(Conflict(unit.name, "module" if unit.kind != "tensor" else "tensor", reason))
            return
        if unit.kind == "lora":
            self._combine_lora(unit)
        else:
            self._combine_tensor(unit)
        self.plan.combined.append(unit.name)

    def _why_not(self, unit: _Unit, sa: tuple, sb: tuple) -> str | None:
        """Why a unit changed on both sides cannot be combined (None: it can)."""
        if not sa or not sb:
            return "removed on one side, changed on the other"
        folder = unit.folder
        ptype = self.a.peft_type(folder)
        if unit.kind == "lycoris":
            return "LoHa/LoKr factors are not additive"
        if unit.kind == "lora":
            if ptype != "LORA":
                return f"{ptype} factors are not additive"
            extra = [n for n in unit.tensors if n not in (unit.a, unit.b)]
            if any("magnitude" in n for n in extra):
                return "a DoRA magnitude is not additive"
            if extra:
                return "LoRA bias or extra parameters"
            for side in (self.o, self.a, self.b):
                present = [n for n in (unit.a, unit.b) if n in side.tensors]
                if len(present) == 1:
                    return f"only one factor on the {side.label} side"
            shapes = set()
            for side in (self.o, self.a, self.b):
                if unit.a in side.tensors:
                    ta, tb = side.tensors[unit.a], side.tensors[unit.b]
                    if not self._roundable(ta.dtype) or not self._roundable(tb.dtype):
                        return f"dtype {ta.dtype} cannot hold a combination"
                    if len(ta.shape) < 2 or len(tb.shape) < 2 or ta.shape[0] != tb.shape[1] \
                            or any(d != 1 for d in tb.shape[2:]):
                        return "factors of an unexpected shape"
                    shapes.add((ta.shape[1:], tb.shape[0]))
            if len(shapes) > 1:
                return "the factors act on weights of different shapes"
            return None
        if ptype not in ADDITIVE_TYPES:
            return f"{ptype} tensors are not additive"
        ea, eb = self.a.tensors[unit.name], self.b.tensors[unit.name]
        eo = self.o.tensors.get(unit.name)
        if ea.shape != eb.shape or (eo is not None and eo.shape != ea.shape):
            return "shapes differ"
        if not self._roundable(ea.dtype) or not self._roundable(eb.dtype) or \
                (eo is not None and not self._roundable(eo.dtype)):
            return f"dtype {ea.dtype if not self._roundable(ea.dtype) else eb.dtype} cannot hold a combination"
        return None

    @staticmethod
    def _roundable(dtype: str) -> bool:
        return dtype in ("F64", "F32", "F16", "BF16")

    # combinations ------------------------------------------------------------------------------------------
    def _values(self, entry: TensorEntry):
        from ..tensors.combine import values

        return values(self.store.read(entry.blob), entry.dtype, entry.shape)

    def _factors(self, side: _Side, unit: _Unit):
        from ..tensors.combine import Factors

        if unit.a not in side.tensors:
            return None
        folder, local = _local(unit.name)
        a = self._values(side.tensors[unit.a])
        b = self._values(side.tensors[unit.b])
        return Factors(a, b, _scale(side.configs.get(folder, {}), folder, local, a.shape[0], side.label))

    def _combine_lora(self, unit: _Unit) -> None:
        from ..tensors.combine import concatenate, factorise_dense, lossy_combine, reduce_rank, to_dtype

        fa, fb, fo = self._factors(self.a, unit), self._factors(self.b, unit), self._factors(self.o, unit)
        assert fa is not None and fb is not None
        ea, eb = self.a.tensors[unit.a], self.a.tensors[unit.b]  # the stored dtypes: ours
        folder, local = _local(unit.name)
        strategy = self.opt.strategy
        if strategy in LOSSY:
            base = fo.dense() if fo is not None else 0.0
            tasks = [fa.dense() - base, fb.dense() - base]
            weights = self.opt.weights or (1.0, 1.0)
            exact_dense = base + lossy_combine(strategy, tasks, weights, self.opt.density, self.opt.seed or 0)
            rank = self.opt.rank or max(fa.rank, fb.rank)
            result = factorise_dense(exact_dense, rank, fa, fa.scale).factors
            self.plan.exact[unit.name] = ("dense", exact_dense)
        else:
            scales = {fa.scale, fb.scale} | ({fo.scale} if fo is not None else set())
            scale = fa.scale if len(scales) > 1 else scales.pop()
            parts = [(fa, 1.0), (fb, 1.0)] + ([(fo, -1.0)] if fo is not None else [])
            result = concatenate(parts, scale)
            self.plan.exact[unit.name] = ("factors", result)
            if self.opt.rank is not None and self.opt.rank < result.rank:
                result = reduce_rank(result, self.opt.rank).factors
        raw_a, raw_b = to_dtype(result.a, ea.dtype), to_dtype(result.b, eb.dtype)
        self._put(unit.a, ea.dtype, result.a.shape, raw_a)
        self._put(unit.b, eb.dtype, result.b.shape, raw_b)
        self.plan.lora.setdefault(folder, {})[local] = (int(result.a.shape[0]), float(result.scale))
        self.plan.factor_names[unit.name] = (unit.a, unit.b)
        self.plan.details.append(Combined(unit.name, "lora", int(result.a.shape[0]), False, None))

    def _put(self, name: str, dtype: str, shape: tuple[int, ...], raw: bytes) -> None:
        from ..hashing import hash_bytes

        oid = hash_bytes(raw)
        self.plan.new[oid] = raw
        self.plan.tensors[name] = TensorEntry(_local(name)[1], dtype, tuple(int(d) for d in shape), oid, len(raw))

    def _combine_tensor(self, unit: _Unit) -> None:
        import numpy as np

        from ..tensors.combine import lossy_combine, rounding_error, to_dtype

        ea, eb = self.a.tensors[unit.name], self.b.tensors[unit.name]
        eo = self.o.tensors.get(unit.name)
        va, vb = self._values(ea), self._values(eb)
        vo = self._values(eo) if eo is not None else np.zeros_like(va)
        if self.opt.strategy in LOSSY:
            weights = self.opt.weights or (1.0, 1.0)
            exact = vo + lossy_combine(self.opt.strategy, [va - vo, vb - vo], weights, self.opt.density,
                                       self.opt.seed or 0)
        else:
            exact = va + vb - vo
        raw = to_dtype(exact, ea.dtype)
        self._put(unit.name, ea.dtype, ea.shape, raw)
        max_abs, rel = rounding_error(exact, raw, ea.dtype)
        self.plan.details.append(Combined(unit.name, "tensor", None, max_abs == 0.0, finite(rel), max_abs))

    # configs and files ---------------------------------------------------------------------------------------
    def _config(self, folder: str) -> None:
        path = qualified(folder, CONFIG_NAME)
        co, ca, cb = (s.configs.get(folder) for s in (self.o, self.a, self.b))
        if ca is None and cb is None:
            self.plan.configs[folder] = None
            return
        if ca is None or cb is None:
            present = ca if ca is not None else cb
            gone_from = "ours" if ca is None else "theirs"
            if co is None or present == co:  # added on one side, or removed on one side and unchanged
                self.plan.configs[folder] = None if co is not None else dict(present)
                return
            side = self.opt.side_for([path, f"{path}:*"]) or \
                (self.opt.strategy if self.opt.strategy in ("ours", "theirs") else None)
            if side is not None:
                chosen = ca if side == "ours" else cb
                self.plan.configs[folder] = dict(chosen) if chosen is not None else None
                return
            self.plan.conflicts.append(Conflict(path, "config", f"adapter removed on {gone_from} side, changed "
                                                                "on the other"))
            self.plan.configs[folder] = dict(present)
            return
        co = co or {}
        merged: dict[str, Any] = {}
        for key in list(dict.fromkeys([*ca, *cb, *co])):
            vo, va, vb = co.get(key, MISSING), ca.get(key, MISSING), cb.get(key, MISSING)
            if va == vb:
                value = va
            elif va == vo:
                value = vb
            elif vb == vo:
                value = va
            elif key in SET_KEYS and all(_set_like(v) for v in (vo, va, vb)):
                value = merge_sets(vo, va, vb)
            elif key in SCALE_KEYS or key in INFORMATIONAL_KEYS:
                value = merge_patterns(vo, va, vb) if key in ("rank_pattern", "alpha_pattern") else va
            else:
                name = f"{path}:{key}"
                side = self.opt.side_for([name]) or \
                    (self.opt.strategy if self.opt.strategy in ("ours", "theirs") else None)
                if side is None:
                    self.plan.conflicts.append(Conflict(name, "config", f"changed on both sides: {short_value(vo)} -> "
                                                                        f"{short_value(va)} / {short_value(vb)}"))
                value = vb if side == "theirs" else va
            if value is not MISSING:
                merged[key] = value
        self.plan.configs[folder] = merged

    def _file(self, path: str) -> None:
        fo, fa, fb = (s.files.get(path) for s in (self.o, self.a, self.b))
        ho, ha, hb = (f.hash if f else None for f in (fo, fa, fb))
        if ha == hb or hb == ho:
            self.plan.files[path] = fa
        elif ha == ho:
            self.plan.files[path] = fb
        else:
            side = self.opt.side_for([path]) or \
                (self.opt.strategy if self.opt.strategy in ("ours", "theirs") else None)
            if side is None:
                self.plan.conflicts.append(Conflict(path, "file", "changed differently on both sides"))
            self.plan.files[path] = fb if side == "theirs" else fa


# -- building the merged version --------------------------------------------------------------------------------
def _measure(store: ObjectStore, plan: Plan, final_configs: dict[str, dict[str, Any]]) -> None:
    """Replace each combined LoRA module's detail by the stored values measured against the exact combination,
    with the scale PEFT will compute from the merged config."""
    import numpy as np

    from ..tensors.combine import Factors, lowrank_norm, update_distance, values

    details = []
    for d in plan.details:
        if d.kind != "lora":
            details.append(d)
            continue
        folder, local = _local(d.name)
        name_a, name_b = plan.factor_names[d.name]
        ea, eb = plan.tensors[name_a], plan.tensors[name_b]
        raw_a = plan.new.get(ea.blob) or store.read(ea.blob)
        raw_b = plan.new.get(eb.blob) or store.read(eb.blob)
        a, b = values(raw_a, ea.dtype, ea.shape), values(raw_b, eb.dtype, eb.shape)
        stored = Factors(a, b, _scale(final_configs.get(folder, {}), folder, local, a.shape[0], "the merge"))
        kind, exact = plan.exact[d.name]
        if kind == "factors":
            dist = update_distance(stored, exact)
            xa, xb = exact.flat()
            norm = lowrank_norm(exact.scale * xb, xa)
        else:
            dist = float(np.linalg.norm(stored.dense() - exact))
            norm = float(np.linalg.norm(exact))
        residual = dist / norm if norm > 0 else (0.0 if dist == 0 else None)
        details.append(Combined(d.name, "lora", d.rank, dist == 0.0, finite(residual)))
    plan.details = details


def _config_bytes(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2, sort_keys=False, ensure_ascii=False).encode() + b"\n"


def build_snapshot(store: ObjectStore, merger: Merger, plan: Plan) -> tuple[Snapshot, list[str]]:
    """Write the new blobs, headers and configs of the merged version; return its snapshot and the modules
    whose scale could only be approximated. Called only when the plan has no conflict."""
    from .compose import compose, header_metadata

    files: list[FileEntry] = []
    approx: list[str] = []
    final_configs: dict[str, dict[str, Any]] = {}
    present = {m.group("module") for n in plan.tensors if (m := LORA_TENSOR.match(n))}
    for folder, config in sorted(plan.configs.items()):
        if config is None:
            continue
        modules = {m: rs for m, rs in plan.lora.get(folder, {}).items() if qualified(folder, m) in present}
        if config.get("peft_type", "LORA") == "LORA" and modules:
            config, bad = state_ranks(config, modules)
            approx += [qualified(folder, m) for m in bad]
        final_configs[folder] = config
        path = qualified(folder, CONFIG_NAME)
        for side in (merger.a, merger.b, merger.o):
            if side.configs.get(folder) == config and path in side.files:
                files.append(side.files[path])  # the same config keeps its bytes: no spurious change
                break
        else:
            data = _config_bytes(config)
            oid = store.put_bytes(data)
            files.append(FileEntry(path, len(data), oid))
    _measure(store, plan, final_configs)
    by_folder: dict[str, list[str]] = {}
    for name in plan.tensors:
        by_folder.setdefault(_local(name)[0], []).append(name)
    for folder, names in sorted(by_folder.items()):
        if folder not in final_configs:
            continue
        path = qualified(folder, WEIGHTS_NAME)
        order: dict[str, None] = {}
        for side in (merger.a, merger.b, merger.o):
            f = side.files.get(path)
            for t in f.layout.tensors if f is not None and f.layout is not None else ():
                q = qualified(folder, t.name)
                if q in plan.tensors:
                    order[q] = None
        for n in sorted(names):
            order[n] = None
        entries = tuple(plan.tensors[n] for n in order)
        reuse = None
        for side in (merger.a, merger.b):
            f = side.files.get(path)
            if f is not None and f.layout is not None and f.layout.tensors == entries:
                reuse = f
                break
        if reuse is not None:
            files.append(reuse)
            continue
        source = merger.a.files.get(path) or merger.b.files.get(path)
        metadata = header_metadata(store, source) if source is not None else None
        new = {t.blob: plan.new[t.blob] for t in entries if t.blob in plan.new}
        files.append(compose(store, path, entries, metadata if metadata is not None else {"format": "pt"}, new))
    files += [f for f in plan.files.values() if f is not None and _folder(f.path) in final_configs]
    return Snapshot(tuple(files)), approx


def merge_snapshots(store: ObjectStore, base: Snapshot | None, ours: Snapshot, theirs: Snapshot,
                    options: MergeOptions) -> tuple[Merger, Plan]:
    """Plan a three-way merge (nothing is written). The plan's ``conflicts`` say whether it can be built."""
    merger = Merger(store, base if base is not None else EMPTY, ours, theirs, options.check())
    return merger, merger.run()
