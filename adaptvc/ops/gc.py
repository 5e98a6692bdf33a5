"""``adaptvc gc``: delete objects that nothing reaches — never one a ref, tag or reflog entry reaches, never
one younger than the grace period, and never one a write in progress may still point at.

The cut-off is fixed before the walk, on the store's own clock, and moved back to the start of the oldest
live write session (``ObjectStore.writers_since``): a commit that wrote its objects before gc started but
moves its branch after gc read the refs keeps everything, even with ``--grace 0``. Removal re-checks the
object's time after taking it away, so a writer that reuses (freshens) an object at that very moment wins.

A dry run (``-n``) computes what the real run would do — reflogs expired in memory, not on disk — and changes
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import AdaptvcError, ChecksumMismatchError, CorruptObjectError
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore, ReflogEntry, Refs
from ..storage.compression import ELEMENT_SIZE
from .compress_plan import plan_compression
from .reachability import walk

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


def cutoff_for(store: ObjectStore, grace_seconds: float) -> float:
    """Objects last written or used at or after this moment are kept."""
    cutoff = store.clock() - max(0.0, grace_seconds)
    oldest_writer = store.writers_since()
    return min(cutoff, oldest_writer) if oldest_writer is not None else cutoff


class _ExpiredReflogs:
    """``refs`` as they will be once their reflogs are expired, without writing anything: what a dry run walks.
    The expiry itself runs unchanged; only its rewrites are kept in memory."""

    def __init__(self, refs: Refs) -> None:
        self._refs = refs
        self._logs: dict[str, list[ReflogEntry]] = {}

    def rewrite_reflog(self, ref: str, entries: list[ReflogEntry], expected: list[ReflogEntry] | None = None) -> None:
        self._logs[ref] = list(entries)

    def reflog(self, ref: str) -> list[ReflogEntry]:
        return list(self._logs[ref]) if ref in self._logs else self._refs.reflog(ref)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._refs, name)


def gc(store: ObjectStore, refs: Refs, grace_seconds: float = DEFAULT_GRACE_SECONDS,
       dry_run: bool = False, aggressive: bool = False, progress: Progress = SILENT,
       expire_reflogs: bool = True) -> GcReport:
    if expire_reflogs:  # as git gc: reflog entries past 90 days (30 when unreachable) go first
        from .reflog_expire import expire_reflogs as expire

        if dry_run:
            refs = _ExpiredReflogs(refs)  # type: ignore[assignment]
        expire(store, refs, now=time.time())
    cutoff = cutoff_for(store, grace_seconds)  # fixed before the walk
    reinstate = getattr(store, "reinstate_packs", None)
    if reinstate is not None and not dry_run:  # a pack a killed gc took away while a writer reused it
        reinstate(cutoff)
    reach = walk(store, refs)
    if reach.live_problems:
        raise AdaptvcError(
            f"the history refers to {len(reach.live_problems)} missing or unreadable object(s), so what is "
            "reachable is uncertain and gc deletes nothing; run 'adaptvc fsck' to see them"
        )
    report = GcReport(dry_run=dry_run, reachable=len(reach.objects))
    keep = set(reach.objects) | set(reach.problems)
    repack = getattr(store, "repack", None)
    if repack is not None and getattr(store, "packed", False):
        # packs: everything old is consolidated into one pack of what is reachable (compressed with --aggressive)
        # --aggressive: each tensor blob compressed, as the difference from the same tensor in its commit's first
        # parent when that is smaller, chains bounded and acyclic by the plan
        plan = plan_compression(store, reach.objects) if aggressive else None
        try:
            packed = repack(keep, cutoff, dry_run, plan.dtypes if plan is not None else None, progress,
                            bases=plan.bases if plan is not None else None)
        except (ChecksumMismatchError, CorruptObjectError) as e:
            raise AdaptvcError(f"{e}; gc deletes nothing while the store is damaged") from None
        report.removed, report.bytes_freed = packed.removed, packed.bytes_freed
        report.bytes_compressed = packed.bytes_compressed
        removed = set(packed.removed)  # (a dry run still has them in the store: they are not "recent")
        report.kept_recent = sum(1 for oid in store.iter_ids() if oid not in keep and oid not in removed)
    else:
        for oid in list(store.iter_ids()):
            if oid in keep:
                continue
            freed = store.prune(oid, cutoff, dry_run)
            if freed is None:
                report.kept_recent += 1
                continue
            report.removed.append(oid)
            report.bytes_freed += freed
        if aggressive and not dry_run:
            report.bytes_compressed = _repack(store, reach.objects, progress)
    debris = getattr(store, "prune_pack_debris", None)  # what a killed commit or gc left in objects/pack
    report.temp_files_removed = (debris(cutoff, dry_run) if debris is not None else 0) + \
        store.prune_temporary(cutoff, dry_run)
    if not dry_run and hasattr(store, "remove_empty_fanout"):
        store.remove_empty_fanout()
    return report


def _compressible(store: ObjectStore, reachable: dict[str, str]) -> dict[str, str]:
    """{blob id: dtype} of every reachable tensor whose dtype the byte-grouping codec knows."""
    dtypes: dict[str, str] = {}
    for oid, kind in reachable.items():
        if kind == "snapshot":
            for _, t in store.read_snapshot(oid).tensors():
                if t.dtype in ELEMENT_SIZE:
                    dtypes[t.blob] = t.dtype
    return dtypes


def _repack(store: ObjectStore, reachable: dict[str, str], progress: Progress) -> int:
    """Compress every reachable tensor blob stored loose (format 1 stores)."""
    dtypes = _compressible(store, reachable)
    raw = [oid for oid in dtypes if store.has(oid) and not store.is_compressed(oid)]
    progress.begin("compress", sum(store.size(oid) for oid in raw))
    saved = 0
    try:
        for oid in raw:
            size = store.size(oid)
            saved += store.compress_object(oid, dtypes[oid])
            progress.update(size)
    finally:
        progress.end()
        store.end_session()
    return saved
