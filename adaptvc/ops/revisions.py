"""Git-style revisions: ``HEAD``, a tag, a branch, a full id or a unique prefix (4+ hex digits), each
followed by any number of ``~N`` (N-th first-parent ancestor) and ``^N`` (N-th parent) steps."""

from __future__ import annotations

import re

from ..errors import AdaptvcError, RevisionError
from ..hashing import is_object_id
from ..parsing import text_ok
from ..refnames import HEADS, REMOTES, TAGS
from ..storage.base import ObjectStore, Refs

MIN_PREFIX = 4
_STEP = re.compile(r"([~^])(\d*)")
_HEX = re.compile(r"[0-9a-f]+")
MAX_REVISION_LENGTH = 1024


def parse_revision(rev: str) -> tuple[str, list[tuple[str, int]]]:
    """Split ``rev`` into its base name and its steps: ``"v1~2^"`` -> ``("v1", [("~", 2), ("^", 1)])``."""
    if not isinstance(rev, str) or not rev or len(rev) > MAX_REVISION_LENGTH:
        raise RevisionError(str(rev)[:50], "empty or too long")
    if not text_ok(rev):
        raise RevisionError(rev.encode("utf-8", "replace").decode(), "not valid UTF-8")
    cut = min((i for i in (rev.find("~"), rev.find("^")) if i >= 0), default=len(rev))
    base, rest = rev[:cut], rev[cut:]
    if not base:
        raise RevisionError(rev, "nothing before ~ or ^")
    steps: list[tuple[str, int]] = []
    pos = 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if not m:
            raise RevisionError(rev, f"cannot read {rest[pos:]!r}; use REV~N or REV^N")
        digits = m.group(2)
        if len(digits) > 6:
            raise RevisionError(rev, "step count too large")
        steps.append((m.group(1), int(digits) if digits else 1))
        pos = m.end()
    return base, steps


def _resolve_base(base: str, refs: Refs, store: ObjectStore) -> str:
    if base in ("HEAD", "@"):
        oid = refs.head_commit()
        if oid is None:
            raise RevisionError(base, "HEAD has no commits yet; run 'adaptvc commit' first")
        return oid
    candidates = [base] if base.startswith(("refs/heads/", "refs/tags/", "refs/remotes/")) else \
        [TAGS + base, HEADS + base, REMOTES + base]
    for ref in candidates:
        try:
            oid = refs.read(ref)
        except AdaptvcError:
            continue  # not a valid ref name: maybe an id
        if oid is not None:
            return oid
    if is_object_id(base):
        if not store.is_commit(base):
            raise RevisionError(base, "no commit with this id")
        return base
    if len(base) >= MIN_PREFIX and _HEX.fullmatch(base):
        matches = [oid for oid in store.iter_ids(base) if store.is_commit(oid)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in sorted(matches)[:5])
            raise RevisionError(base, f"ambiguous prefix, matches {shown}; use more digits")
    raise RevisionError(
        base, "no tag, branch or commit of that name; see 'adaptvc log', 'adaptvc tag' and 'adaptvc branch'"
    )


def resolve_revision(rev: str, refs: Refs, store: ObjectStore) -> str:
    """The full commit id ``rev`` names."""
    base, steps = parse_revision(rev)
    oid = _resolve_base(base, refs, store)
    for op, n in steps:
        if op == "~":
            for _ in range(n):
                parents = store.read_commit(oid).parents
                if not parents:
                    raise RevisionError(rev, f"goes back further than the first commit ({oid[:12]})")
                oid = parents[0]
        elif n:  # ^0 is the commit itself
            parents = store.read_commit(oid).parents
            if len(parents) < n:
                raise RevisionError(rev, f"commit {oid[:12]} has {len(parents)} parent(s)")
            oid = parents[n - 1]
    return oid
