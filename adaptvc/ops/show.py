"""Looking inside a version without checking it out: one file's bytes (``show REV:PATH``) and one tensor's
numbers (``show REV --tensor NAME``), computed with numpy from the stored bytes — no torch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..errors import InvalidInputError
from ..objects import Snapshot, TensorEntry
from ..storage.base import ObjectStore

#: elements converted to float64 at a time: memory stays flat for any tensor size
CHUNK_ELEMENTS = 1 << 20
#: tensors listed at most by one ``--tensor`` glob
MAX_TENSORS_SHOWN = 10_000


def split_rev_path(spec: str) -> tuple[str, str] | None:
    """``"v1:adapter_config.json"`` -> ``("v1", "adapter_config.json")``; None when ``spec`` names no path
    (ref names cannot hold ``:``). ``":path"`` means HEAD, as in git."""
    rev, sep, path = spec.partition(":")
    if not sep:
        return None
    return rev or "HEAD", path


def file_chunks(store: ObjectStore, snapshot: Snapshot, path: str, label: str) -> Iterator[memoryview]:
    """The bytes of file ``path`` of a version, as committed (each blob re-hashed as it is read)."""
    entry = snapshot.file(path)
    if entry is None:
        names = ", ".join(f.path for f in snapshot.files[:6]) + (", ..." if len(snapshot.files) > 6 else "")
        raise InvalidInputError(f"path {path!r}", f"is not a file of {label} (its files: {names or 'none'})")
    for oid in entry.blobs():
        yield from store.iter_chunks(oid)


@dataclass(frozen=True)
class TensorStats:
    """One tensor's description and numbers (float64 over every element; None for a non-numeric dtype or
    an empty tensor). NaN and infinite elements are counted and left out of the numbers."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    hash: str
    size: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    norm: float | None = None
    nonfinite: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "hash": self.hash,
                "size": self.size, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "norm": self.norm, "nonfinite": self.nonfinite}


def select_tensors(snapshot: Snapshot, name: str, label: str) -> list[tuple[str, TensorEntry]]:
    """The tensor called ``name``, or every tensor a glob ``name`` matches; refused when there is none."""
    tensors = snapshot.tensors()
    exact = [(n, t) for n, t in tensors if n == name]
    if exact:
        return exact
    hits = [(n, t) for n, t in tensors if fnmatchcase(n, name)]
    if not hits:
        close = [n for n, _ in tensors if name.rsplit(".", 2)[0] in n][:3]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise InvalidInputError(f"tensor {name!r}", f"is not in {label}{hint}")
    return hits[:MAX_TENSORS_SHOWN]


def tensor_stats(store: ObjectStore, name: str, entry: TensorEntry) -> TensorStats:
    """dtype, shape, blob hash, size and min/max/mean/std/norm of one stored tensor, read chunk by chunk."""
    from ..tensors.dtypes import NUMERIC_DTYPES, itemsize, to_float64

    base = TensorStats(name, entry.dtype, entry.shape, entry.blob, entry.size)
    if entry.dtype not in NUMERIC_DTYPES:
        for _ in store.iter_chunks(entry.blob):  # still check the bytes
            pass
        return base
    import numpy as np

    step = CHUNK_ELEMENTS * itemsize(entry.dtype)
    count, mean, m2, sq = 0, 0.0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    nonfinite = 0
    pending = bytearray()

    def add(raw: bytes | bytearray) -> None:
        nonlocal count, mean, m2, sq, lo, hi, nonfinite
        x = to_float64(raw, entry.dtype)
        finite = np.isfinite(x)
        if not finite.all():
            nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
        if not x.size:
            return
        n = int(x.size)
        cm = float(x.mean())
        d = x - cm
        cm2 = float(d @ d)
        delta = cm - mean
        total = count + n
        mean += delta * n / total   # Chan et al.: merge the chunk's mean and squared deviations
        m2 += cm2 + delta * delta * count * n / total
        count = total
        sq += float(x @ x)
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))

    for chunk in store.iter_chunks(entry.blob):
        pending += chunk
        while len(pending) >= step:
            add(pending[:step])
            del pending[:step]
    if pending:
        add(pending)
    if count == 0:
        return TensorStats(name, entry.dtype, entry.shape, entry.blob, entry.size, nonfinite=nonfinite)
    return TensorStats(name, entry.dtype, entry.shape, entry.blob, entry.size, lo, hi, mean,
                       math.sqrt(max(m2 / count, 0.0)), math.sqrt(sq), nonfinite)
