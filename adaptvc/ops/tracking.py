"""How a branch stands against its upstream (``status``: "ahead of 'origin/main' by 2 commits").

adaptvc keeps no per-branch upstream setting: a branch's upstream is the remote-tracking branch of the same
name, ``refs/remotes/<remote>/<branch>``, of ``origin`` when it is configured, else of the only remote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AdaptvcError
from ..refnames import REMOTES
from ..storage.base import ObjectStore, Refs
from .graph import ancestors


@dataclass(frozen=True)
class Tracking:
    upstream: str   # "origin/main"
    ahead: int      # commits on the branch that the upstream lacks
    behind: int     # commits on the upstream that the branch lacks

    def to_json(self) -> dict[str, Any]:
        return {"upstream": self.upstream, "ahead": self.ahead, "behind": self.behind}

    def describe(self) -> str:
        """git's sentence for it."""
        def n(k: int) -> str:
            return f"{k} commit{'s' if k != 1 else ''}"

        if self.ahead and self.behind:
            return (f"Your branch and '{self.upstream}' have diverged, and have {self.ahead} and {self.behind} "
                    "different commits each, respectively.")
        if self.ahead:
            return f"Your branch is ahead of '{self.upstream}' by {n(self.ahead)}."
        if self.behind:
            return f"Your branch is behind '{self.upstream}' by {n(self.behind)}, and can be fast-forwarded."
        return f"Your branch is up to date with '{self.upstream}'."


def ahead_behind(store: ObjectStore, ours: str | None, theirs: str) -> tuple[int, int]:
    """(commits reachable from ``ours`` but not ``theirs``, and the reverse); commits missing locally end a walk."""
    a = ancestors(store, ours, store.has) if ours else set()
    b = ancestors(store, theirs, store.has)
    return len(a - b), len(b - a)


def upstream_remote(remotes: list[str]) -> str | None:
    """The remote whose tracking branches are the upstreams: ``origin``, else the only one."""
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None


def tracking(store: ObjectStore, refs: Refs, branch: str | None, remotes: list[str]) -> Tracking | None:
    """How ``branch`` stands against its upstream; None when detached, without a remote, or never fetched."""
    remote = upstream_remote(remotes)
    if branch is None or remote is None:
        return None
    ref = f"{REMOTES}{remote}/{branch}"
    try:
        theirs = refs.read(ref)
        if theirs is None:
            return None
        ours = refs.read("refs/heads/" + branch)
        ahead, behind = ahead_behind(store, ours, theirs)
    except AdaptvcError:
        return None  # an unreadable ref or commit: status reports the rest
    return Tracking(f"{remote}/{branch}", ahead, behind)
