"""The value types stored in an adaptvc repository, and their canonical encoding.

Three kinds of object live in the store, each under the xxh3-128 of its bytes:

* a **blob** is raw bytes: one tensor's data, a safetensors header, a config file, a model card;
* a :class:`Snapshot` describes one adapter version: its files and, for safetensors files, the header
  blob and one blob per tensor in offset order;
* a :class:`Commit` points at a snapshot and its parents, and pins the base model.

Snapshots and commits are canonical JSON (sorted keys, no spaces, UTF-8), so equal content gives equal ids.
``docs/format.md`` is the specification; ``tests/test_objects.py`` pins the exact bytes. Each type also has
``to_json()``: the shape ``--json`` prints and any other client (a web UI, a script) reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import CorruptObjectError
from .hashing import hash_bytes, is_object_id
from .parsing import JsonError, parse_json
from .peft_layout import check_snapshot_path

FORMAT_VERSION = 1


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _json_safe(value: Any) -> Any:
    """Metadata is free-form, but JSON has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class _Reader:
    """Typed access to a decoded JSON object; any mismatch is a CorruptObjectError."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise CorruptObjectError(what, "expected a JSON object")
        self.data = data
        self.what = what

    def fail(self, reason: str) -> CorruptObjectError:
        return CorruptObjectError(self.what, reason)

    def get(self, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise self.fail(f"missing field {key!r}")
        value = self.data[key]
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"field {key!r} has the wrong type")
        return value

    def kind(self, expected: str) -> None:
        """Check the ``type`` and ``format`` fields every snapshot and commit carries."""
        if self.get("type", str) != expected:
            raise self.fail(f"not a {expected}")
        if self.get("format", int) != FORMAT_VERSION:
            raise self.fail(f"unsupported {expected} format {self.data.get('format')}")

    def oid(self, key: str, optional: bool = False) -> Any:
        value = self.get(key, str, optional)
        if value is not None and not is_object_id(value):
            raise self.fail(f"field {key!r} is not an object id")
        return value


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: its data is the blob ``blob`` of ``size`` bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    blob: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "blob": self.blob,
                "size": self.size}

    @classmethod
    def from_dict(cls, data: Any, what: str = "tensor") -> TensorEntry:
        r = _Reader(data, what)
        shape = r.get("shape", list)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise r.fail("shape must be a list of non-negative integers")
        size = r.get("size", int)
        if size < 0:
            raise r.fail("negative size")
        return cls(r.get("name", str), r.get("dtype", str), tuple(shape), r.oid("blob"), size)


@dataclass(frozen=True)
class SafetensorsLayout:
    """How to rebuild a safetensors file: the header blob (the 8-byte length and the JSON header exactly as
    in the file), then each tensor's blob in offset order."""

    header: str
    header_size: int
    tensors: tuple[TensorEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "header_size": self.header_size,
                "tensors": [t.to_dict() for t in self.tensors]}

    @classmethod
    def from_dict(cls, data: Any, what: str = "layout") -> SafetensorsLayout:
        r = _Reader(data, what)
        tensors = tuple(TensorEntry.from_dict(t, what) for t in r.get("tensors", list))
        return cls(r.oid("header"), r.get("header_size", int), tensors)


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot. ``hash`` is the xxh3-128 of the whole file. A plain file is stored as the
    blob ``hash``; a safetensors file is stored as its ``layout``."""

    path: str
    size: int
    hash: str
    layout: SafetensorsLayout | None = None

    def __post_init__(self) -> None:
        check_snapshot_path(self.path)  # the one rule, whatever the snapshot's source

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "size": self.size, "hash": self.hash}
        if self.layout is not None:
            d["safetensors"] = self.layout.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Any, what: str = "file") -> FileEntry:
        r = _Reader(data, what)
        path = r.get("path", str)
        layout_data = r.get("safetensors", dict, optional=True)
        layout = SafetensorsLayout.from_dict(layout_data, what) if layout_data is not None else None
        size = r.get("size", int)
        if layout is not None and layout.header_size + sum(t.size for t in layout.tensors) != size:
            raise r.fail(f"{path}: header and tensor sizes do not add up to the file size")
        return cls(path, size, r.oid("hash"), layout)

    def blobs(self) -> list[str]:
        """Every blob this file is made of, in file order."""
        if self.layout is None:
            return [self.hash]
        return [self.layout.header, *(t.blob for t in self.layout.tensors)]


@dataclass(frozen=True)
class Snapshot:
    """One adapter version: its files, sorted by path."""

    files: tuple[FileEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "snapshot", "format": FORMAT_VERSION, "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, data: Any, what: str = "snapshot") -> Snapshot:
        r = _Reader(data, what)
        r.kind("snapshot")
        files = tuple(FileEntry.from_dict(f, what) for f in r.get("files", list))
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise r.fail("duplicate file paths")
        return cls(files)

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @cached_property
    def id(self) -> str:
        return hash_bytes(self.encode())

    def file(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None

    def to_json(self) -> dict[str, Any]:
        """The files and tensors as ``show --json`` prints them."""
        return {
            "files": [{"path": f.path, "size": f.size, "hash": f.hash} for f in self.files],
            "tensors": [{"name": name, "dtype": t.dtype, "shape": list(t.shape), "hash": t.blob, "size": t.size}
                        for name, t in self.tensors()],
        }

    def without(self, drop: Callable[[str], bool]) -> Snapshot:
        """The same version without the files whose path ``drop`` selects (e.g. training state)."""
        kept = tuple(f for f in self.files if not drop(f.path))
        return self if len(kept) == len(self.files) else Snapshot(kept)

    def tensors(self) -> list[tuple[str, TensorEntry]]:
        """(qualified name, entry) for every tensor. A tensor of the top-level adapter file keeps its name;
        one in a sub-folder's file (PEFT saves extra adapters there) is named ``folder/name``."""
        out = []
        for f in self.files:
            if f.layout is None:
                continue
            folder = f.path.rpartition("/")[0]
            for t in f.layout.tensors:
                out.append((f"{folder}/{t.name}" if folder else t.name, t))
        return out


@dataclass(frozen=True)
class BasePin:
    """The base model an adapter belongs to: ``name_or_path`` to load it by (a portable Hub name when one is
    known), its ``revision`` (never the adapter's), a ``fingerprint`` when the base was at hand, and the
    ``local_path`` the adapter config named when a portable name replaced it."""

    name_or_path: str | None = None
    revision: str | None = None
    fingerprint: str | None = None
    local_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"name_or_path": self.name_or_path, "revision": self.revision, "fingerprint": self.fingerprint}
        if self.local_path is not None:
            d["local_path"] = self.local_path
        return d

    @classmethod
    def from_dict(cls, data: Any, what: str = "base") -> BasePin:
        r = _Reader(data, what)
        return cls(r.get("name_or_path", str, True), r.get("revision", str, True), r.get("fingerprint", str, True),
                   r.get("local_path", str, True))

    def describe(self) -> str:
        if not self.name_or_path:
            return "(unknown)"
        return f"{self.name_or_path}@{self.revision}" if self.revision else self.name_or_path


_PIN_KEYS = ("name_or_path", "revision", "fingerprint", "local_path")


def _well_formed_commit(cls: Any, data: Any) -> Any:
    """The commit ``data`` describes when every field has exactly the type :meth:`Commit.from_dict`'s checks
    accept, else None (and the checks run, to name the problem). Same result, a fifth of the time."""
    if type(data) is not dict or data.get("type") != "commit":
        return None
    fmt, snapshot, parents = data.get("format"), data.get("snapshot"), data.get("parents")
    message, author, timestamp = data.get("message"), data.get("author"), data.get("timestamp")
    base, provenance, metadata = data.get("base"), data.get("provenance"), data.get("metadata")
    if type(fmt) is not int or fmt != FORMAT_VERSION or type(snapshot) is not str or not is_object_id(snapshot) \
            or type(parents) is not list or type(message) is not str or type(author) is not str \
            or type(timestamp) is not str or type(base) is not dict \
            or (provenance is not None and type(provenance) is not dict) \
            or (metadata is not None and type(metadata) is not dict):
        return None
    for p in parents:
        if type(p) is not str or not is_object_id(p):
            return None
    pin = [base.get(k) for k in _PIN_KEYS]
    for v in pin:
        if v is not None and type(v) is not str:
            return None
    return cls(snapshot=snapshot, parents=tuple(parents), message=message, author=author, timestamp=timestamp,
               base=BasePin(*pin), provenance=provenance, metadata=metadata or {})


@dataclass(frozen=True)
class Commit:
    """A version in the history."""

    snapshot: str
    parents: tuple[str, ...]
    message: str
    author: str
    timestamp: str  # ISO 8601 with UTC offset
    base: BasePin = field(default_factory=BasePin)
    provenance: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "commit",
            "format": FORMAT_VERSION,
            "snapshot": self.snapshot,
            "parents": list(self.parents),
            "message": self.message,
            "author": self.author,
            "timestamp": self.timestamp,
            "base": self.base.to_dict(),
            "provenance": _json_safe(self.provenance),
            "metadata": _json_safe(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Any, what: str = "commit") -> Commit:
        fast = _well_formed_commit(cls, data)
        if fast is not None:  # the usual case, checked in one pass (log reads 10,000 of these)
            return fast
        r = _Reader(data, what)  # anything else: the field-by-field checks, which say what is wrong
        r.kind("commit")
        parents = r.get("parents", list)
        if not all(isinstance(p, str) and is_object_id(p) for p in parents):
            raise r.fail("parents must be object ids")
        return cls(
            snapshot=r.oid("snapshot"),
            parents=tuple(parents),
            message=r.get("message", str),
            author=r.get("author", str),
            timestamp=r.get("timestamp", str),
            base=BasePin.from_dict(r.get("base", dict), what),
            provenance=r.get("provenance", dict, optional=True),
            metadata=r.get("metadata", dict, optional=True) or {},
        )

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @cached_property
    def id(self) -> str:
        return hash_bytes(self.encode())

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else ""

    def to_json(self) -> dict[str, Any]:
        """One commit as the ``log --json`` item: the documented keys, stable for scripts."""
        return {
            "id": self.id,
            "parents": list(self.parents),
            "message": self.message,
            "author": self.author,
            "timestamp": self.timestamp,
            "base": {"name_or_path": self.base.name_or_path, "revision": self.base.revision,
                     "fingerprint": self.base.fingerprint},
            "snapshot": self.snapshot,
            "metadata": self.metadata,
            "provenance": self.provenance,
        }


def decode_json_object(data: bytes, oid: str) -> dict[str, Any]:
    """A stored or received JSON object (a commit, a snapshot), bounded in depth; CorruptObjectError if not."""
    try:
        obj = parse_json(data)
    except JsonError as e:
        raise CorruptObjectError(oid, str(e)) from None
    if not isinstance(obj, dict):
        raise CorruptObjectError(oid, "not a JSON object")
    return obj
