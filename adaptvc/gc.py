"""``adaptvc gc``: delete objects that nothing reaches — never one a ref, tag or reflog entry reaches, and
never one younger than the grace period (a concurrent commit's fresh or freshened objects)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .compression import ELEMENT_SIZE
from .errors import AdaptvcError
from .progress import SILENT, Progress
from .reachability import walk
from .refs import Refs
from .store import ObjectStore

#: objects (and temporary files) younger than this are kept: a commit in progress may be about to use them
DEFAULT_GRACE_SECONDS = 3600.0


@dataclass
class GcReport:
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_recent: int = 0
    reachable: int = 0
    temp_files_removed: int = 0
    bytes_compressed: int = 0  # saved by --aggressive

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "removed": self.removed, "bytes_freed": self.bytes_freed,
                "kept_recent": self.kept_recent, "reachable": self.reachable,
                "temp_files_removed": self.temp_files_removed, "bytes_compressed": self.bytes_compressed}


def gc(store: ObjectStore, refs: Refs, grace_seconds: float = DEFAULT_GRACE_SECONDS,
       dry_run: bool = False, aggressive: bool = False, progress: Progress = SILENT) -> GcReport:
    reach = walk(store, refs)
    if reach.problems:
        raise AdaptvcError(
            f"the history refers to {len(reach.problems)} missing or unreadable object(s), so what is reachable "
            "is uncertain and gc deletes nothing; run 'adaptvc fsck' to see them"
        )
    report = GcReport(dry_run=dry_run, reachable=len(reach.objects))
    cutoff = time.time() - grace_seconds
    for oid in list(store.iter_ids()):
        if oid in reach.objects:
            continue
        stats = []
        for path in store.files(oid):
            with contextlib.suppress(FileNotFoundError):
                stats.append((path, os.lstat(path)))
        if not stats:
            continue
        if max(st.st_mtime for _, st in stats) > cutoff:
            report.kept_recent += 1
            continue
        if not dry_run:
            for path, _ in stats:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        report.removed.append(oid)
        report.bytes_freed += sum(st.st_size for _, st in stats)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(store.tmp_dir):
            if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                report.temp_files_removed += 1
    if aggressive and not dry_run:
        report.bytes_compressed = _repack(store, reach.objects, progress)
    if not dry_run:  # empty fan-out folders
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(store.objects_dir):
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)
    return report


def _repack(store: ObjectStore, reachable: dict[str, str], progress: Progress) -> int:
    """Compress every reachable tensor blob whose dtype the byte-grouping codec knows (see compression.py)."""
    dtypes: dict[str, str] = {}
    for oid, kind in reachable.items():
        if kind == "snapshot":
            for _, t in store.read_snapshot(oid).tensors():
                if t.dtype in ELEMENT_SIZE:
                    dtypes[t.blob] = t.dtype
    raw = [oid for oid in dtypes if store.path(oid).is_file()]
    progress.begin("compress", sum(store.size(oid) for oid in raw))
    saved = 0
    try:
        for oid in raw:
            size = store.size(oid)
            saved += store.compress_object(oid, dtypes[oid])
            progress.update(size)
    finally:
        progress.end()
    return saved
