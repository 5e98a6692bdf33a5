"""What an export looks like: names, the per-version folder, the ``adaptvc.json`` record, the one rewrite.

An export of commit ``3fa9c1d2e4b5…`` under the serving name ``support-bot`` is the folder (or bucket prefix)
``support-bot@3fa9c1d2e4b5``: the adapter's files byte for byte as committed, plus ``adaptvc.json``, a record
of what the folder holds (commit, base-model pin, every file's size and xxh3-128 hash, what was rewritten).

A folder name is never reused for other bytes. The only change adaptvc ever makes to a committed file is the
documented one: ``--served-base NAME`` rewrites the value of ``base_model_name_or_path`` in the adapter
configs (vLLM's filesystem resolver requires it to equal the served ``--model`` string exactly), leaving every
other byte of the file as it was. Because that gives other bytes, such an export's version carries a short
hash of the served name as well: ``support-bot@3fa9c1d2e4b5-1a2b3c4d``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import AdaptvcError, InvalidAdapterError, InvalidInputError
from ..hashing import hash_bytes, is_object_id
from ..objects import BasePin
from ..parsing import JsonError, parse_json, text_ok
from ..peft_layout import check_snapshot_path

RECORD_NAME = "adaptvc.json"
RECORD_KIND = "adaptvc-export"
RECORD_FORMAT = 1
#: the largest record adaptvc reads back (a few hundred bytes per file)
MAX_RECORD = 1 << 20
#: the one field ``--served-base`` rewrites
BASE_FIELD = "base_model_name_or_path"
#: hex digits of the commit id in a version folder's name
ID_DIGITS = 12
#: hex digits of the served-base hash appended to the version when the config was rewritten
SERVED_DIGITS = 8
MAX_SERVED_BASE = 1024

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(rf"[0-9a-f]{{{ID_DIGITS}}}(?:-[0-9a-f]{{{SERVED_DIGITS}}})?")


class InvalidRecordError(AdaptvcError):
    """An ``adaptvc.json`` that cannot be an export record adaptvc wrote."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


def check_name(name: Any) -> str:
    """A serving name: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most
    100 characters; never ``/``, ``..``, ``@`` or anything a server could read as a path."""
    what = f"serving name {name!r}" if isinstance(name, str) and text_ok(name) else "the serving name"
    if not isinstance(name, str) or not text_ok(name):
        raise InvalidInputError(what, "is not valid UTF-8 text")
    if not _NAME.fullmatch(name) or ".." in name or name.endswith(".") or name == RECORD_NAME:
        raise InvalidInputError(what, "may hold only ASCII letters, digits, '.', '_' and '-' (no '/', '..' or '@'), "
                                      "must start with a letter or digit and be at most 100 characters")
    return name


def check_served_base(value: Any) -> str:
    """A value for ``--served-base``: what the server's ``--model`` says, verbatim (a Hub name or a path), in
    one line of valid UTF-8 without control characters or surrounding spaces."""
    if not isinstance(value, str) or not text_ok(value):
        raise InvalidInputError("--served-base", "is not valid UTF-8 text")
    if not value:
        raise InvalidInputError("--served-base", "is empty: give the exact --model string the server was started with")
    if value != value.strip():
        raise InvalidInputError("--served-base", f"{value!r} starts or ends with spaces; the server compares the "
                                                 "string exactly")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in value):
        raise InvalidInputError("--served-base", f"{value!r} holds a control character")
    if len(value.encode()) > MAX_SERVED_BASE:
        raise InvalidInputError("--served-base", f"is longer than {MAX_SERVED_BASE} bytes")
    return value


def version_of(commit_id: str, served_base: str | None) -> str:
    """The version part of an export's name: the commit id's first 12 hex digits, plus a hash of the served
    base name when the config was rewritten for one."""
    if not is_object_id(commit_id):
        raise InvalidInputError(f"commit id {commit_id!r}", "is not a full object id")
    version = commit_id[:ID_DIGITS]
    if served_base is not None:
        version += "-" + hash_bytes(served_base.encode())[:SERVED_DIGITS]
    return version


def folder_name(name: str, version: str) -> str:
    return f"{name}@{version}"


def parse_folder_name(entry: str) -> tuple[str, str] | None:
    """``("support-bot", "3fa9c1d2e4b5")`` for ``support-bot@3fa9c1d2e4b5``; None for any other name."""
    name, sep, version = entry.rpartition("@")
    if not sep or not _VERSION.fullmatch(version):
        return None
    try:
        check_name(name)
    except InvalidInputError:
        return None
    return name, version


# -- the one rewrite ---------------------------------------------------------------------------------------
_WS = " \t\n\r"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def rewrite_base(data: bytes, served_base: str, path: str = "adapter_config.json") -> tuple[bytes, Any]:
    """``data`` (an adapter config) with the value of its top-level ``base_model_name_or_path`` replaced by
    ``served_base``, every other byte unchanged; and the value it had. Refuses a config without that key."""
    try:
        parsed = parse_json(data, MAX_RECORD * 64)
        text = data.decode("utf-8")
    except (JsonError, UnicodeDecodeError) as e:
        raise InvalidAdapterError(path, f"cannot rewrite {BASE_FIELD}: not acceptable JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise InvalidAdapterError(path, "is not a JSON object")
    if BASE_FIELD not in parsed:
        raise InvalidAdapterError(path, f"has no {BASE_FIELD} to rewrite for --served-base")
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    i = _skip(text, 0)
    if text[i:i + 1] != "{":
        raise InvalidAdapterError(path, "is not a JSON object")
    i = _skip(text, i + 1)
    if text[i:i + 1] != "}":
        while True:
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = _skip(text, _skip(text, i) + 1)  # past the ':'
            _, end = decoder.raw_decode(text, i)
            if key == BASE_FIELD:
                spans.append((i, end))
            i = _skip(text, end)
            if text[i] == ",":
                i = _skip(text, i + 1)
                continue
            break
    new = json.dumps(served_base)  # ASCII-escaped, as PEFT writes its configs
    out = []
    last = 0
    for start, end in spans:  # a key given twice: JSON readers take the last one; rewrite every one
        out += [text[last:start], new]
        last = end
    out.append(text[last:])
    rewritten = "".join(out).encode("utf-8")
    check = parse_json(rewritten)
    if not isinstance(check, dict) or check.get(BASE_FIELD) != served_base or \
            {k: v for k, v in check.items() if k != BASE_FIELD} != {k: v for k, v in parsed.items() if k != BASE_FIELD}:
        raise InvalidAdapterError(path, f"could not rewrite {BASE_FIELD} without changing anything else")
    return rewritten, parsed[BASE_FIELD]


# -- the record --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportedFile:
    """One file of an export, as written: ``path`` relative to the version folder."""

    path: str
    size: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "hash": self.hash}


@dataclass(frozen=True)
class Rewrite:
    """The documented change made to one config: ``field`` went from ``original`` to ``value``; the committed
    file had ``original_size`` bytes hashing to ``original_hash``."""

    path: str
    field: str
    original: Any
    value: str
    original_size: int
    original_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "from": self.original, "to": self.value, "original_size": self.original_size,
                "original_hash": self.original_hash}


@dataclass(frozen=True)
class ExportRecord:
    """The content of ``adaptvc.json``: what an export folder holds and where it came from."""

    name: str
    version: str
    commit: str
    snapshot: str
    message: str
    base: BasePin
    served_base: str | None
    files: tuple[ExportedFile, ...]
    rewritten: tuple[Rewrite, ...] = ()

    @property
    def folder(self) -> str:
        return folder_name(self.name, self.version)

    def file(self, path: str) -> ExportedFile | None:
        return next((f for f in self.files if f.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": RECORD_KIND, "format": RECORD_FORMAT, "name": self.name, "version": self.version,
            "commit": self.commit, "snapshot": self.snapshot, "message": self.message, "base": self.base.to_dict(),
            "served_base": self.served_base, "hash": "xxh3-128",
            "files": {f.path: f.to_dict() for f in self.files},
            "rewritten": {r.path: r.to_dict() for r in self.rewritten},
        }

    def encode(self) -> bytes:
        """Deterministic bytes: the same export always writes the same record."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> ExportRecord:
        """Read a record from a folder or a bucket: hostile, so every field is checked."""
        try:
            d = parse_json(data, MAX_RECORD)
        except JsonError as e:
            raise InvalidRecordError(where, f"is not an adaptvc export record ({e})") from None
        if not isinstance(d, dict) or d.get("kind") != RECORD_KIND:
            raise InvalidRecordError(where, "is not an adaptvc export record")
        if d.get("format") != RECORD_FORMAT:
            raise InvalidRecordError(where, f"has record format {d.get('format')!r}; this adaptvc reads format "
                                            f"{RECORD_FORMAT}")

        def get(key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
            value = d.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InvalidRecordError(where, f"field {key!r} is missing or of the wrong type")
            return value

        def oid(value: Any, what: str) -> str:
            if not isinstance(value, str) or not is_object_id(value):
                raise InvalidRecordError(where, f"{what} is not an object id")
            return value

        def size(value: Any, what: str) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRecordError(where, f"{what} is not a size")
            return value

        def path(p: Any) -> str:
            try:
                return check_snapshot_path(p)
            except (AdaptvcError, TypeError):
                raise InvalidRecordError(where, f"names a file an adapter cannot hold: {str(p)[:80]!r}") from None

        name, version = get("name", str), get("version", str)
        if parse_folder_name(folder_name(name, version)) != (name, version):
            raise InvalidRecordError(where, "its name or version is not one adaptvc writes")
        files = tuple(ExportedFile(path(p), size(f.get("size") if isinstance(f, dict) else None, f"size of {p}"),
                                   oid(f.get("hash") if isinstance(f, dict) else None, f"hash of {p}"))
                      for p, f in sorted(get("files", dict).items()))
        rewritten = []
        for p, r in sorted((get("rewritten", dict, optional=True) or {}).items()):
            if not isinstance(r, dict) or r.get("field") != BASE_FIELD or not isinstance(r.get("to"), str):
                raise InvalidRecordError(where, f"its rewrite of {str(p)[:80]!r} is not one adaptvc makes")
            rewritten.append(Rewrite(path(p), BASE_FIELD, r.get("from"), r["to"],
                                     size(r.get("original_size"), f"original size of {p}"),
                                     oid(r.get("original_hash"), f"original hash of {p}")))
        base_data = get("base", dict)
        try:
            base = BasePin.from_dict(base_data, where)
        except AdaptvcError:
            raise InvalidRecordError(where, "its base-model pin is not valid") from None
        served = get("served_base", str, optional=True)
        return cls(name=name, version=version, commit=oid(d.get("commit"), "commit"),
                   snapshot=oid(d.get("snapshot"), "snapshot"), message=get("message", str), base=base,
                   served_base=served, files=files, rewritten=tuple(rewritten))

    def problems(self, entry: str | None = None) -> list[str]:
        """What is inconsistent inside the record itself (and with its folder's name ``entry``)."""
        out = []
        if entry is not None and entry != self.folder:
            out.append(f"its record names {self.folder}, not {entry}")
        try:
            expected = version_of(self.commit, self.served_base)
        except InvalidInputError:
            expected = None
        if expected != self.version:
            out.append(f"its record's version {self.version} does not match its commit {self.commit[:ID_DIGITS]}"
                       + (" and served base" if self.served_base is not None else ""))
        for r in self.rewritten:
            if r.value != self.served_base:
                out.append(f"its record says {r.path} was rewritten to {r.value!r}, not the served base")
            if self.file(r.path) is None:
                out.append(f"its record lists a rewrite of {r.path} but no such file")
        if self.file(RECORD_NAME) is not None:
            out.append(f"its record lists {RECORD_NAME} among the adapter's files")
        return out
