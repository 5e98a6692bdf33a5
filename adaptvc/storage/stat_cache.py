"""A stat cache for the work tree, like git's index: a file whose size, mtime, ctime and inode are unchanged
since it was last hashed is not read again, so ``status`` and a no-op commit cost a few ``stat`` calls.

Racy writes (a file changed within the same timestamp tick as the cache was written) are handled as git
does: an entry whose mtime is not safely older than the moment it was recorded is never trusted. The cache
is an optimisation, never a source of truth: a damaged cache (any shape, any bytes) is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..objects import FileEntry
from ..parsing import parse_json
from .atomic import read_file, write_atomic

INDEX_VERSION = 1
#: an mtime this close to the time of recording may hide a later write in the same tick
RACY_NS = 2_000_000_000
MAX_CACHE_BYTES = 64 << 20


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class StatCache:
    def __init__(self, admin_dir: Path, root: Path, name: str = "index.json") -> None:
        self.admin_dir = admin_dir
        self.name = name
        self.root = root.resolve()
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            raw = read_file(admin_dir, name, MAX_CACHE_BYTES)
            data = parse_json(raw) if raw is not None else None
        except (OSError, ValueError):  # unreadable, a link, too large, not JSON: start empty
            return
        if isinstance(data, dict) and data.get("version") == INDEX_VERSION and data.get("root") == str(self.root) \
                and isinstance(data.get("entries"), dict):
            self.entries = {k: v for k, v in data["entries"].items() if isinstance(v, dict)}

    def lookup(self, rel: str, st: os.stat_result) -> FileEntry | None:
        e = self.entries.get(rel)
        try:
            if not e or e.get("stat") != _key(st) or e.get("recorded_ns", 0) - st.st_mtime_ns < RACY_NS:
                return None
            entry = FileEntry.from_dict(e["entry"])
        except Exception:  # a damaged cache is only a missed shortcut
            return None
        return entry if entry.path == rel else None

    def record(self, rel: str, st: os.stat_result, entry: FileEntry) -> None:
        self.entries[rel] = {"stat": _key(st), "recorded_ns": time.time_ns(), "entry": entry.to_dict()}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        data = json.dumps({"version": INDEX_VERSION, "root": str(self.root), "entries": self.entries}).encode()
        with contextlib.suppress(OSError):  # best effort: the cache is an optimisation
            write_atomic(self.admin_dir, self.name, data, durable=False)
        self.dirty = False
