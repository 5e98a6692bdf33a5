"""One side of a comparison: a snapshot whose tensors can be read, from the store or from a folder."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileChangedError
from ..hashing import hash_bytes, new_hasher
from ..objects import Snapshot, TensorEntry
from ..ops.capture import open_adapter_file
from ..peft_layout import CONFIG_NAME
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore
from .dtypes import NUMERIC_DTYPES, Workspace, itemsize, to_float64

WORKTREE = "worktree"


class TensorReader:
    """Tensors and configs of one adapter version.

    ``folder=None``: the snapshot is in the store and each tensor is read from its blob. Otherwise the
    snapshot describes the files in ``folder`` (the work tree) and tensors are read from them at their
    offsets. Either way the bytes read are re-hashed and must match the snapshot's blob id.
    """

    def __init__(self, label: str, snapshot: Snapshot, store: ObjectStore, folder: str | os.PathLike[str] | None = None,
                 configs: dict[str, dict[str, Any]] | None = None) -> None:
        self.label = label
        self.snapshot = snapshot
        self.store = store
        self.folder = Path(folder) if folder is not None else None
        self.tensors: dict[str, TensorEntry] = dict(snapshot.tensors())
        self._where: dict[str, tuple[str, int]] = {}
        self._configs = configs or {}
        for f in snapshot.files:
            if f.layout is None:
                continue
            prefix = f.path.rpartition("/")[0]
            offset = f.layout.header_size
            for t in f.layout.tensors:
                self._where[f"{prefix}/{t.name}" if prefix else t.name] = (f.path, offset)
                offset += t.size

    @property
    def adapter_folders(self) -> list[str]:
        """The folders holding an adapter config ("" for the top level)."""
        return sorted(self._configs)

    def config(self, folder: str = "") -> dict[str, Any]:
        """The adapter config of the top-level adapter (``folder=""``) or of a sub-folder adapter."""
        return self._configs.get(folder, {})

    #: told of every tensor's bytes as they are read (``diff`` shows a bar on long comparisons)
    progress: Progress = SILENT

    @property
    def _buffer(self) -> memoryview:
        """This side's read buffer, one per thread: two sides stream side by side, and a diff reads modules
        on several threads at once."""
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__.setdefault("_local", threading.local())
        buf = getattr(local, "buffer", None)
        if buf is None:
            buf = local.buffer = memoryview(bytearray(8 << 20))
        return buf

    def raw(self, name: str) -> bytes:
        entry = self.tensors[name]
        self.progress.update(entry.size)
        if self.folder is None:
            return self.store.read(entry.blob, buffer=self._buffer)
        rel, offset = self._where[name]
        with open_adapter_file(self.folder, rel) as f:
            f.seek(offset)
            data = f.read(entry.size)
        if len(data) != entry.size or hash_bytes(data) != entry.blob:
            raise FileChangedError(rel)
        return data

    def stream(self, name: str, workspace: Workspace, slot: str, elements: int) -> Iterator[np.ndarray]:
        """The tensor's values as float64, ``elements`` at a time (views of ``workspace``'s buffer ``slot``,
        each valid until the next): memory stays flat whatever the tensor's size. The bytes are checked against
        the tensor's blob id when the stream ends."""
        entry = self.tensors[name]
        size = itemsize(entry.dtype)
        step = elements * size
        self.progress.update(entry.size)
        pending = bytearray()
        for chunk in self._raw_chunks(name, self._buffer):  # re-cut into equal steps: two sides stay aligned
            pending += chunk
            while len(pending) >= step:
                yield workspace.convert(slot, memoryview(pending)[:step], entry.dtype)
                del pending[:step]
        if pending:
            yield workspace.convert(slot, pending, entry.dtype)

    def _raw_chunks(self, name: str, buffer: memoryview) -> Iterator[memoryview]:
        entry = self.tensors[name]
        if self.folder is None:
            yield from self.store.iter_chunks(entry.blob, verify=True, buffer=buffer)
            return
        rel, offset = self._where[name]
        h = new_hasher()
        remaining = entry.size
        with open_adapter_file(self.folder, rel) as f:
            f.seek(offset)
            while remaining:
                n = f.readinto(buffer[: min(len(buffer), remaining)])
                if not n:
                    raise FileChangedError(rel)
                h.update(buffer[:n])
                remaining -= n
                yield buffer[:n]
        if h.hexdigest() != entry.blob:
            raise FileChangedError(rel)

    def values(self, name: str, workspace: Workspace | None = None, slot: str = "") -> np.ndarray:
        """The tensor as a float64 array of its shape (in ``workspace``'s buffer ``slot`` when given: valid
        until that slot is used again)."""
        entry = self.tensors[name]
        raw = self.raw(name)
        flat = workspace.convert(slot, raw, entry.dtype) if workspace is not None else to_float64(raw, entry.dtype)
        return flat.reshape(entry.shape)

    def numeric(self, name: str) -> bool:
        return self.tensors[name].dtype in NUMERIC_DTYPES


def folder_configs(snapshot: Snapshot, read: Any) -> dict[str, dict[str, Any]]:
    """``{adapter folder: config}`` for every adapter_config.json of a snapshot, loaded with ``read(path)``."""
    out = {}
    for f in snapshot.files:
        folder, _, name = f.path.rpartition("/")
        if name == CONFIG_NAME:
            out[folder] = read(f.path)
    return out

