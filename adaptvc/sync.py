"""push, fetch and the fast-forward of pull: moving versions between a store and a remote.

The rules are git's: a push only fast-forwards (the remote moves by compare-and-swap, so a concurrent push
is refused, never clobbered); a fetch brings only what the local store lacks and records where a configured
remote's branches were in ``refs/remotes/<remote>/<branch>``; a pull fetches then fast-forwards the current
branch and refuses when the two have diverged. A URL given instead of a remote name moves objects only: no
remote-tracking ref is made for it (as ``git fetch URL`` does).

Everything a remote lists is checked before any local ref moves: names must be valid ref names (others are
skipped and reported), and every ref must name a commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import AdaptvcError
from .ops.graph import is_ancestor
from .ops.tracking import upstream_remote
from .peft_layout import CONFIG_NAME, is_config_path
from .progress import SILENT, Progress
from .refnames import HEADS, REMOTES, TAGS
from .remotes import NonFastForwardError, RefUpdate, Remote, RemoteError, open_remote
from .remotes.registry import looks_like_url
from .storage.base import ObjectStore, Refs


@dataclass
class SyncResult:
    remote: str
    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # ref -> (old, new)
    bytes: int = 0
    message: str = ""
    #: the remote's refs, as listed (a fetch from a URL records nothing else)
    remote_refs: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "bytes": self.bytes, "message": self.message,
                "updated": {k: {"old": o, "new": n} for k, (o, n) in self.updated.items()},
                "skipped": self.skipped}


@dataclass(frozen=True)
class RemoteChoice:
    """Which remote a command talks to: a configured one (``name`` set) or a URL given directly."""

    label: str
    remote: Remote
    name: str | None


def choose_remote(configured: dict[str, str], name_or_url: str | None, local: ObjectStore) -> RemoteChoice:
    """The remote ``name_or_url`` names; without one, the upstream (``origin``, else the only remote), as
    ``status`` compares against. Several remotes and none of them ``origin``: refused, never guessed."""
    name = name_or_url or upstream_remote(sorted(configured))
    if name is None and configured:
        raise AdaptvcError(f"no upstream: there are several remotes ({', '.join(sorted(configured))}) and none is "
                           "'origin'; name the remote to use after the command")
    if name is None:
        raise AdaptvcError("no remote configured: run 'adaptvc remote add origin URL'")
    if name in configured:
        return RemoteChoice(name, open_remote(configured[name], name, local), name)
    if looks_like_url(name):
        return RemoteChoice(name, open_remote(name, "origin", local), None)
    raise AdaptvcError(f"no remote named {name!r}; see 'adaptvc remote -v'")


def push(store: ObjectStore, refs: Refs, choice: RemoteChoice, branches: list[str], tags: bool = False,
         private: bool = False, progress: Progress = SILENT) -> SyncResult:
    remote = choice.remote
    if not remote.exists():
        remote.create(private=private)
    remote_refs = remote.list_refs()
    updates: list[RefUpdate] = []
    for b in branches:
        local = refs.read(HEADS + b)
        if local is None:
            raise AdaptvcError(f"no local branch {b!r} to push")
        old = remote_refs.get(HEADS + b)
        if old == local:
            continue
        if old is not None and not is_ancestor(store, old, local):
            raise NonFastForwardError(HEADS + b, choice.label)
        updates.append(RefUpdate(HEADS + b, old, local))
    if tags:
        for t, oid in refs.list(TAGS).items():
            old = remote_refs.get(TAGS + t)
            if old == oid:
                continue
            if old is not None:
                raise AdaptvcError(f"tag {t!r} points elsewhere on {choice.label}; tags are not moved by push")
            updates.append(RefUpdate(TAGS + t, None, oid))
    result = SyncResult(choice.label)
    if not updates:
        result.message = "everything up to date"
        return result
    result.bytes = remote.upload(store, updates, progress)
    for u in updates:
        result.updated[u.ref] = (u.old, u.new)
        if u.ref.startswith(HEADS) and choice.name is not None:
            track(refs, choice.name, u.ref[len(HEADS):], u.new)
    result.message = "pushed"
    return result


def track(refs: Refs, remote: str, branch: str, oid: str) -> None:
    ref = f"{REMOTES}{remote}/{branch}"
    refs.set_if_equals(ref, refs.read(ref), oid, f"update by sync with {remote}")


def fetch(store: ObjectStore, refs: Refs, choice: RemoteChoice, progress: Progress = SILENT) -> SyncResult:
    remote = choice.remote
    remote_refs = remote.list_refs()
    result = SyncResult(choice.label, remote_refs=dict(remote_refs), skipped=list(remote.skipped_refs))
    missing = sorted({oid for oid in remote_refs.values() if not store.has(oid)})
    try:
        result.bytes = remote.download(store, missing, progress) if missing else 0
        for ref, oid in sorted(remote_refs.items()):
            if not store.is_commit(oid):
                raise RemoteError(f"{choice.label}: {ref} names {oid[:12]}, which is not a commit; nothing was "
                                  "updated")
        if choice.name is not None:
            for ref, oid in sorted(remote_refs.items()):
                if ref.startswith(HEADS):
                    tracking = f"{REMOTES}{choice.name}/{ref[len(HEADS):]}"
                    old = refs.read(tracking)
                    if old != oid:
                        track(refs, choice.name, ref[len(HEADS):], oid)
                        result.updated[tracking] = (old, oid)
                elif ref.startswith(TAGS) and refs.read(ref) is None:
                    # new tags arrive; an existing local tag is never moved by a fetch
                    refs.set_if_equals(ref, None, oid, f"fetch from {choice.name}")
                    result.updated[ref] = (None, oid)
    finally:
        store.end_session()
    unreadable = remote.unreadable_refs
    if unreadable:  # never "up to date" about a ref that could not be read; the readable ones were fetched
        ref, problem = sorted(unreadable.items())[0]
        more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        raise RemoteError(f"{choice.label}: the remote ref {ref!r} cannot be read ({problem}){more}; the other "
                          "refs were fetched; run 'adaptvc fsck --remote' to see every problem")
    result.message = "fetched" if result.updated or result.bytes else "already up to date"
    if result.skipped:
        result.message += (f"; skipped {len(result.skipped)} remote ref(s) whose names cannot be local refs: "
                           + ", ".join(repr(r) for r in result.skipped[:3]))
    return result


def fast_forward_target(store: ObjectStore, ours: str | None, theirs: str, branch: str, label: str) -> bool:
    """True when ``branch`` (at ``ours``) should move to ``theirs``; False when already up to date; an error
    naming what to do when the two have diverged."""
    if ours == theirs or (ours is not None and is_ancestor(store, theirs, ours)):
        return False
    if ours is not None and not is_ancestor(store, ours, theirs):
        other = f"{label}/{branch}" if not looks_like_url(label) else theirs[:12]  # a URL has no tracking ref
        raise AdaptvcError(f"your branch {branch!r} and {label}/{branch} have diverged; to combine their versions "
                           f"with yours, run 'adaptvc merge {other}'")
    return True


def carried_base(store: ObjectStore, commit_id: str) -> dict[str, str | None] | None:
    """The base pin a clone keeps in its config, from the version it starts at: the commit's base-model name
    and revision when its adapter config alone would not give them (they came from ``init --base`` /
    ``--base-revision`` or ``commit --base``), so that the clone's commits are pinned as the origin's are
    (and merge with them). None when the adapter config gives the same pin."""
    from .ops.merge_plan import stored_config

    commit = store.read_commit(commit_id)
    pin = commit.base
    if not pin.name_or_path and not pin.revision:
        return None
    snapshot = store.read_snapshot(commit.snapshot)
    cfg = stored_config(store, snapshot, next((f.path for f in snapshot.files if is_config_path(f.path)), CONFIG_NAME))
    from_config = tuple(v if isinstance(v, str) and v else None
                        for v in (cfg.get("base_model_name_or_path"), cfg.get("revision")))
    if (pin.name_or_path or None, pin.revision or None) == from_config:
        return None
    return {"name_or_path": pin.name_or_path, "revision": pin.revision}
