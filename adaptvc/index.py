"""A stat cache for the work tree, like git's index: a file whose size, mtime, ctime and inode are unchanged
since it was last hashed is not read again, so ``status`` and a no-op commit cost a few ``stat`` calls.

Racy writes (a file changed within the same timestamp tick as the cache was written) are handled as git
does: an entry whose mtime is not safely older than the moment it was recorded is never trusted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .objects import FileEntry

INDEX_VERSION = 1
#: an mtime this close to the time of recording may hide a later write in the same tick
RACY_NS = 2_000_000_000


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class StatCache:
    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root.resolve()
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == INDEX_VERSION and data.get("root") == str(self.root):
                self.entries = data.get("entries", {})
        except (OSError, ValueError, AttributeError):
            self.entries = {}

    def lookup(self, rel: str, st: os.stat_result) -> FileEntry | None:
        e = self.entries.get(rel)
        if not e or e.get("stat") != _key(st) or e.get("recorded_ns", 0) - st.st_mtime_ns < RACY_NS:
            return None
        try:
            return FileEntry.from_dict(e["entry"])
        except Exception:  # a damaged cache is only a missed shortcut
            return None

    def record(self, rel: str, st: os.stat_result, entry: FileEntry) -> None:
        self.entries[rel] = {"stat": _key(st), "recorded_ns": time.time_ns(), "entry": entry.to_dict()}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "root": str(self.root), "entries": self.entries}),
                           encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # best effort: the cache is an optimisation, never a source of truth
        self.dirty = False
