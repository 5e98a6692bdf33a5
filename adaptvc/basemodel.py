"""Base-model pinning: which base an adapter belongs to, and refusing the wrong one.

An adapter is only meaningful on the base it was trained on; PEFT warns or silently loads onto the wrong
one, and an adapter whose module names match nothing in the base just serves the base model. Each commit
records a fingerprint of its base when the base is at hand (a local folder, or the local Hugging Face
cache), and :func:`verify_folder_base` / :func:`verify_live_base` check a candidate base against it:

* every adapter module must exist in the base, with a weight of the shape the factors imply;
* the fingerprint ``fp1:arch=…;layout=…;weights=…`` must match component by component: ``arch`` hashes
  ``model_type`` and ``architectures``, ``layout`` the names and shapes of the weights the adapter targets,
  ``weights`` a deterministic sample of their values as float32 (so a base loaded in float32 from a bf16
  checkpoint still matches; a different model does not).

Folder fingerprints are cached by file path, size and mtime, so a commit does not re-read the base.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AdaptvcError
from .hashing import hash_bytes
from .hfcache import resolve_base_folder
from .objects import BasePin, Snapshot
from .parsing import parse_json
from .peft_layout import ADAPTER_PARTS as _ADAPTER_PARTS
from .peft_layout import PEFT_PREFIX as _PEFT_PREFIX
from .safetensors_format import read_header
from .storage.atomic import read_file, write_atomic
from .tensors.dtypes import NUMERIC_DTYPES, itemsize, to_float64

SAMPLE_HEAD = 256
SAMPLE_STRIDED = 256
SKETCH_SIZE = 16
SKETCH_SEED = 20261125
#: bf16 keeps 8 bits of mantissa: its rounding moves a projection by at most 2⁻⁸ of the norm
SKETCH_TOLERANCE = 2.0 ** -7


#: what to do next, for the commands and functions that can load a version on another base anyway
FORCE_HINT = "Use --force (force=True) to load it anyway"


class BaseMismatchError(AdaptvcError):
    """The base model differs from the one a version was trained on. ``hint`` ends the message: the next step
    where the error is raised (by default: how to load it anyway)."""

    def __init__(self, problems: list[str], hint: str = FORCE_HINT) -> None:
        self.problems = problems
        self.hint = hint
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        super().__init__("the base model does not match the adapter: " + "; ".join(problems[:2]) + more
                         + (f". {hint}" if hint else ""))


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a base model, for the weights an adapter targets.

    ``arch`` hashes ``model_type``/``architectures``; ``layout`` the names and shapes of the targeted weights;
    ``weights`` a deterministic sample of their values (exact: the format-1 check); ``sketch`` 16 random
    projections of that sample and its norm (format 2), compared with a tolerance of 2⁻⁷ of the norm: the
    same base stored in bf16, fp16 or fp32 matches, a different model does not (a chance of about 1e-14)."""

    arch: str
    layout: str
    weights: str
    sketch: tuple[float, ...] = ()
    #: a live base whose targeted weights are quantized (4-bit/8-bit): only its architecture can be compared
    quantized: bool = False

    def encode(self) -> str:
        sketch = base64.b64encode(struct.pack(f"<{len(self.sketch)}f", *self.sketch)).decode()
        return f"fp2:arch={self.arch};layout={self.layout};weights={self.weights};sketch={sketch}"

    @classmethod
    def parse(cls, text: str | None) -> Fingerprint | None:
        if not text or not text.startswith(("fp1:", "fp2:")):
            return None
        parts = dict(p.split("=", 1) for p in text[4:].split(";") if "=" in p)
        if not {"arch", "layout", "weights"} <= parts.keys():
            return None
        sketch: tuple[float, ...] = ()
        if text.startswith("fp2:"):
            try:
                raw = base64.b64decode(parts.get("sketch", ""), validate=True)
                sketch = struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4])
            except (ValueError, struct.error):
                return None
        return cls(parts["arch"], parts["layout"], parts["weights"], sketch)

    def values_match(self, other: Fingerprint) -> bool:
        if not self.sketch or not other.sketch:  # a format-1 pin: exact sample hashes
            return self.weights == other.weights
        if len(self.sketch) != len(other.sketch):
            return False
        norm = max(abs(self.sketch[0]), abs(other.sketch[0]))
        return all(abs(x - y) <= SKETCH_TOLERANCE * norm + 1e-30 for x, y in zip(self.sketch, other.sketch,
                                                                                  strict=True))

    def differences(self, pinned: Fingerprint) -> list[str]:
        out = []
        if self.arch != pinned.arch:
            out.append("architecture (model_type / architectures) differs from the pinned base")
        if self.quantized:
            return out  # packed weights: their shapes and values say nothing about the original
        if self.layout != pinned.layout:
            out.append("names or shapes of the targeted weights differ from the pinned base")
        elif not self.values_match(pinned):
            out.append("values of the targeted weights differ from the pinned base")
        return out


# -- what the adapter needs from its base ------------------------------------------------------------------
def target_modules(snapshot: Snapshot, folder: str = "", config: dict[str, Any] | None = None,
                   ) -> dict[str, tuple[int, int] | None]:
    """``{base module name: expected weight shape or None}`` for the adapter in ``folder`` of a snapshot.

    Only per-module adapter tensors count (VeRA's shared ``base_model.vera_A`` is not a module); a LoRA
    module expects a ``(d_out, d_in)`` weight, or ``(d_in, d_out)`` for the transposed Conv1D layers of GPT-2
    (``fan_in_fan_out`` in the adapter config)."""
    prefix = f"{folder}/" if folder else ""
    transposed = bool((config or {}).get("fan_in_fan_out"))
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, t in snapshot.tensors():
        if not name.startswith(prefix) or "/" in name[len(prefix):]:
            continue
        local = name[len(prefix):]
        if not local.startswith(_PEFT_PREFIX):
            continue  # shared adapter tensors (VeRA's projections) belong to no module
        parts = local[len(_PEFT_PREFIX):].split(".")
        cut = next((i for i, p in enumerate(parts) if p.startswith(_ADAPTER_PARTS)), None)
        if not cut:
            continue
        module = ".".join(parts[:cut])
        factors.setdefault(module, {})[parts[cut]] = t.shape
    out: dict[str, tuple[int, int] | None] = {}
    for module, f in factors.items():
        a, b = f.get("lora_A"), f.get("lora_B")
        if a and b and len(a) == 2 and len(b) == 2:
            out[module] = (a[1], b[0]) if transposed else (b[0], a[1])
        else:
            out[module] = None
    return out


def pinned_folder(snapshot: Snapshot) -> str:
    """The adapter folder whose targets select the weights a pin fingerprints (the first one, sorted)."""
    folders = sorted({f.path.rpartition("/")[0] for f in snapshot.files if f.path.endswith("adapter_config.json")})
    return folders[0] if folders else ""


def _arch_hash(config: dict[str, Any]) -> str:
    arch = {"model_type": config.get("model_type"), "architectures": config.get("architectures")}
    return hash_bytes(json.dumps(arch, sort_keys=True).encode())[:16]


def _sample_indices(n: int) -> np.ndarray:
    head = np.arange(min(n, SAMPLE_HEAD))
    strided = np.linspace(0, n - 1, num=min(n, SAMPLE_STRIDED)).astype(np.int64) if n else head
    return np.concatenate([head, strided])


def _sketch(values: np.ndarray) -> tuple[float, ...]:
    """The norm of the sample and ``SKETCH_SIZE`` projections on fixed random ±1/√n directions."""
    x = values.astype(np.float64)
    if x.size == 0:
        return ()
    signs = np.random.default_rng(SKETCH_SEED).integers(0, 2, size=(SKETCH_SIZE, x.size)) * 2 - 1
    proj = signs @ x / math.sqrt(x.size)
    return (float(np.linalg.norm(x)), *(float(p) for p in proj))


def _fingerprint(config: dict[str, Any], weights: dict[str, tuple[tuple[int, ...], np.ndarray]]) -> Fingerprint:
    """``weights``: {name: (shape, sampled values as float32)} of the targeted base weights."""
    names = sorted(weights)
    layout = json.dumps([[n, list(weights[n][0])] for n in names]).encode()
    samples = [weights[n][1].astype("<f4") for n in names]
    values = b"".join(s.tobytes() for s in samples)
    sketch = _sketch(np.concatenate(samples)) if samples else ()
    return Fingerprint(_arch_hash(config), hash_bytes(layout)[:16], hash_bytes(values)[:16], sketch)


# -- a base model in a folder ------------------------------------------------------------------------------
def _folder_weights(folder: Path) -> dict[str, tuple[Path, Any, int]]:
    """``{tensor name: (file, TensorInfo, header size)}`` over every safetensors file of a model folder."""
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            header = read_header(f, os.fstat(f.fileno()).st_size, path.name)
        for t in header.tensors:
            out[t.name] = (path, t, header.size)
    return out


def _read_sample(path: Path, info: Any, header_size: int) -> np.ndarray:
    size = itemsize(info.dtype)
    n = info.nbytes // size
    idx = _sample_indices(n)
    with open(path, "rb") as f:
        chunks = []
        for i in idx:
            f.seek(header_size + info.begin + int(i) * size)
            chunks.append(f.read(size))
    return to_float64(b"".join(chunks), info.dtype).astype(np.float32)


def folder_fingerprint(folder: Path, targets: dict[str, tuple[int, int] | None], cache_file: Path | None = None,
                       ) -> tuple[Fingerprint, list[str]]:
    """The fingerprint of the base in ``folder`` for these targets, and the problems found (missing modules,
    wrong shapes). Cached in ``cache_file`` by the files' path, size and mtime."""
    files = [f for f in [*sorted(folder.glob("*.safetensors")), folder / "config.json"] if f.exists()]
    stats = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = hash_bytes(json.dumps(["fp2", stats, sorted(targets), sorted(targets.items())]).encode())
    cache: dict[str, Any] = {}
    if cache_file is not None:
        try:
            raw = read_file(cache_file.parent, cache_file.name, 64 << 20)
            cache = parse_json(raw) if raw else {}
        except (OSError, ValueError):
            cache = {}
        if not isinstance(cache, dict):
            cache = {}
        hit = cache.get(key)
        if isinstance(hit, dict) and isinstance(hit.get("fingerprint"), str) and isinstance(hit.get("problems"), list):
            fp = Fingerprint.parse(hit["fingerprint"])
            if fp is not None:
                return fp, [str(p) for p in hit["problems"]]
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    tensors = _folder_weights(folder)
    problems = _check_targets(targets, {n: tuple(t.shape) for n, (_, t, _) in tensors.items()})
    weights = {}
    for module in targets:
        name = f"{module}.weight"
        if name in tensors:
            path, info, hsize = tensors[name]
            sample = _read_sample(path, info, hsize) if info.dtype in NUMERIC_DTYPES else np.zeros(0, np.float32)
            weights[name] = (tuple(info.shape), sample)
    fp = _fingerprint(config if isinstance(config, dict) else {}, weights)
    if cache_file is not None:
        cache[key] = {"fingerprint": fp.encode(), "problems": problems}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a cache: best effort
            write_atomic(cache_file.parent, cache_file.name, json.dumps(cache).encode(), durable=False)
    return fp, problems


def _check_targets(targets: dict[str, tuple[int, int] | None], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    problems = []
    missing = sorted(m for m in targets if f"{m}.weight" not in shapes)
    if missing:
        problems.append(f"{len(missing)} of {len(targets)} adapter modules match nothing in the base "
                        f"(e.g. {missing[0]})")
    for module, expected in sorted(targets.items()):
        got = shapes.get(f"{module}.weight")
        if expected is not None and got is not None and tuple(got[:2]) != expected:
            problems.append(f"{module}.weight has shape {list(got)}, the adapter needs {list(expected)}")
    return problems


# -- a live base model -------------------------------------------------------------------------------------
def live_fingerprint(model: Any, targets: dict[str, tuple[int, int] | None]) -> tuple[Fingerprint, list[str]]:
    import torch

    config = model.config.to_dict() if hasattr(model, "config") else {}
    # a model built from a config (not loaded) has no "architectures" yet; save_pretrained would write its class
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    # a model that already carries PEFT layers keeps its original weight at "<module>.base_layer.weight"
    state = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()
             if not any(part.startswith(_ADAPTER_PARTS) for part in n.split("."))}
    targeted = [state[f"{m}.weight"] for m in targets if f"{m}.weight" in state]
    quantized = any(type(p).__name__ in ("Params4bit", "Int8Params") or not p.dtype.is_floating_point
                    for p in targeted)
    if quantized:  # bitsandbytes packs weights: their shapes differ from the adapter's expectations
        problems = _check_targets({m: None for m in targets}, {n: tuple(p.shape) for n, p in state.items()})
        return Fingerprint(_arch_hash(config), "", "", (), quantized=True), problems
    problems = _check_targets(targets, {n: tuple(p.shape) for n, p in state.items()})
    weights = {}
    with torch.no_grad():
        for module in targets:
            p = state.get(f"{module}.weight")
            if p is None:
                continue
            flat = p.detach().reshape(-1)
            idx = torch.from_numpy(_sample_indices(flat.numel()))
            weights[f"{module}.weight"] = (tuple(p.shape), flat[idx].to(torch.float32).cpu().numpy())
    return _fingerprint(config, weights), problems


# -- verification ------------------------------------------------------------------------------------------
def _compare(pinned: str | None, fp: Fingerprint, problems: list[str]) -> list[str]:
    pin = Fingerprint.parse(pinned)
    return problems + (fp.differences(pin) if pin is not None else [])


def verify_live_base(snapshot: Snapshot, pin: BasePin, model: Any, folder: str = "",
                     config: dict[str, Any] | None = None, pinned_config: dict[str, Any] | None = None) -> None:
    """Check a live base model: the modules of the adapter in ``folder`` exist with the right shapes, and the
    weights the pin fingerprinted (those of the pinned adapter folder) are the pinned ones."""
    folder = folder.strip("/")
    problems = live_fingerprint(model, target_modules(snapshot, folder, config))[1]
    fp = live_fingerprint(model, target_modules(snapshot, pinned_folder(snapshot), pinned_config or config))[0]
    issues = _compare(pin.fingerprint, fp, problems)
    if issues:
        raise BaseMismatchError(issues)


def verify_folder_base(snapshot: Snapshot, pin: BasePin, base: str, folder: str = "",
                       cache_file: Path | None = None, config: dict[str, Any] | None = None,
                       pinned_config: dict[str, Any] | None = None) -> Fingerprint:
    path = resolve_base_folder(base, pin.revision)
    if path is None:
        raise AdaptvcError(f"no base model at {base!r}: give a folder with config.json and *.safetensors, or a "
                           "Hub name that is in the local Hugging Face cache")
    folder = folder.strip("/")
    problems = folder_fingerprint(path, target_modules(snapshot, folder, config), cache_file)[1]
    fp = folder_fingerprint(path, target_modules(snapshot, pinned_folder(snapshot), pinned_config or config),
                            cache_file)[0]
    issues = _compare(pin.fingerprint, fp, problems)
    if issues:
        raise BaseMismatchError(issues)
    return fp


def pin_fingerprint(snapshot: Snapshot, name_or_path: str | None, revision: str | None,
                    cache_file: Path | None = None, config: dict[str, Any] | None = None) -> str | None:
    """The fingerprint to record in a commit, when its base is at hand; None otherwise (never an error).
    ``config`` is the adapter config of the pinned (first) adapter folder."""
    path = resolve_base_folder(name_or_path, revision)
    if path is None:
        return None
    try:
        fp, _ = folder_fingerprint(path, target_modules(snapshot, pinned_folder(snapshot), config), cache_file)
    except (AdaptvcError, OSError, ValueError, struct.error):
        return None
    return fp.encode()
