"""``reflog expire``: drop old reflog entries so that gc can reclaim what only they kept alive — git's rules.

An entry older than ``expire`` (default 90 days) is dropped; an entry older than ``expire_unreachable``
(default 30 days) is dropped when a commit it names is not reachable from the ref's current tip (a commit
later reset away, the whole log of a deleted branch). HEAD's own log is expired like any other. When a ref's
history cannot be walked (a damaged store), only the age rule applies to its log: nothing is dropped on a
guess. A log left empty is removed.

Each log is rewritten in one step under its ref's lock, and only if no move was logged since it was read
(:meth:`~adaptvc.storage.base.Refs.rewrite_reflog`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import AdaptvcError, InvalidInputError, RefMovedError
from ..refnames import HEADS, REMOTES, TAGS, check_full_ref
from ..storage.base import ObjectStore, ReflogEntry, Refs
from .graph import ancestors

DAY = 86400.0
#: git's defaults (gc.reflogExpire, gc.reflogExpireUnreachable)
DEFAULT_EXPIRE = 90 * DAY
DEFAULT_EXPIRE_UNREACHABLE = 30 * DAY
NEVER = -math.inf   # a cut-off before every entry
ALL = math.inf      # a cut-off after every entry ("now", "all")

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
          "d": DAY, "day": DAY, "w": 7 * DAY, "week": 7 * DAY, "month": 30 * DAY, "y": 365 * DAY, "year": 365 * DAY}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)[ .]?([a-z]+?)s?(?:[ .]ago)?$")


def parse_when(text: str, now: float) -> float:
    """A cut-off time from ``--expire=WHEN``: ``now``/``all`` (every entry), ``never``/``false`` (none), an age
    (``30d``, ``2.weeks.ago``, ``90 days``, ``12h``, ``0``) or a date (``2026-01-31``, ISO 8601)."""
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidInputError(f"expiry time {str(text)[:40]!r}", "is too long")
    t = text.strip().lower()
    if t in ("now", "all"):
        return ALL
    if t in ("never", "false"):
        return NEVER
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        return ALL if float(t) == 0 else now - float(t) * DAY
    m = _AGO.match(t)
    if m and m.group(2) in _UNITS:
        age = float(m.group(1)) * _UNITS[m.group(2)]
        return ALL if age == 0 else now - age
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(f"expiry time {text!r}", "is not understood: use now, never, an age such as 30d "
                                                         "or 2.weeks.ago, or a date such as 2026-01-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@dataclass
class ExpireReport:
    dry_run: bool
    #: ``{ref: (entries before, entries dropped)}``
    refs: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(d for _, d in self.refs.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "dropped": self.dropped,
                "refs": {r: {"entries": n, "dropped": d} for r, (n, d) in self.refs.items()}}


def _tip(refs: Refs, ref: str) -> str | None:
    return refs.head_commit() if ref == "HEAD" else refs.read(ref)


def expire_reflogs(store: ObjectStore, refs: Refs, names: list[str] | None = None, *,
                   expire: float | None = None, expire_unreachable: float | None = None, now: float,
                   dry_run: bool = False) -> ExpireReport:
    """Expire the reflogs of ``names`` (full ref names or ``HEAD``; None: every reflog). ``expire`` and
    ``expire_unreachable`` are cut-off times (entries strictly older are dropped); None applies git's
    defaults (90 and 30 days before ``now``)."""
    cut_all = now - DEFAULT_EXPIRE if expire is None else expire
    cut_unreachable = now - DEFAULT_EXPIRE_UNREACHABLE if expire_unreachable is None else expire_unreachable
    targets = ["HEAD", *refs.reflog_refs()] if names is None else [check_full_ref(n) for n in names]
    report = ExpireReport(dry_run)
    for ref in dict.fromkeys(targets):
        for _ in range(3):  # a move logged while we worked: read again
            try:
                before = refs.reflog(ref)
                keep = _kept(store, refs, ref, before, cut_all, cut_unreachable)
                report.refs[ref] = (len(before), len(before) - len(keep))
                if not dry_run and len(keep) != len(before):
                    refs.rewrite_reflog(ref, keep, expected=before)
                break
            except RefMovedError:
                continue
    return report


def _kept(store: ObjectStore, refs: Refs, ref: str, entries: list[ReflogEntry], cut_all: float,
          cut_unreachable: float) -> list[ReflogEntry]:
    reachable: set[str] | None = None
    unknown = False
    keep = []
    for e in entries:
        if e.time < cut_all:
            continue
        if e.time < cut_unreachable:
            if reachable is None:
                try:
                    tip = _tip(refs, ref)
                    reachable = ancestors(store, tip, store.has) if tip else set()
                except (AdaptvcError, OSError):
                    unknown = True  # the history cannot be walked: keep everything rather than guess
                    reachable = set()
            if not unknown and any(c is not None and c not in reachable for c in (e.old, e.new)):
                continue
        keep.append(e)
    return keep


def full_ref_name(refs: Refs, name: str) -> str:
    """``main`` -> ``refs/heads/main`` (a tag when only a tag has that name), ``HEAD`` and full names as they are;
    a deleted branch still names its reflog."""
    if name == "HEAD" or name.startswith("refs/"):
        return check_full_ref(name)
    logged = set(refs.reflog_refs())
    for prefix in (HEADS, TAGS, REMOTES):
        ref = prefix + name
        try:
            check_full_ref(ref)
        except AdaptvcError:
            continue
        if ref in logged or refs.read(ref) is not None:
            return ref
    raise InvalidInputError(f"ref {name!r}", "has no reflog (see 'adaptvc branch', 'adaptvc tag')")
