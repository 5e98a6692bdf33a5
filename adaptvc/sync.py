"""push, fetch, pull and clone: moving versions between a repository and its remotes.

The rules are git's: a push only fast-forwards (the remote moves by compare-and-swap, so a concurrent push
is refused, never clobbered); a fetch brings only what the local store lacks and records where the remote's
branches were in ``refs/remotes/<remote>/<branch>``; a pull fetches then fast-forwards the current branch
and refuses when the two have diverged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AdaptvcError
from .progress import SILENT, Progress
from .refs import HEADS, REMOTES, TAGS, check_ref_name
from .remotes import NonFastForwardError, RefUpdate, Remote, open_remote
from .snapshot import is_training_state

if TYPE_CHECKING:
    from .repository import Repository


@dataclass
class SyncResult:
    remote: str
    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # ref -> (old, new)
    bytes: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "bytes": self.bytes, "message": self.message,
                "updated": {k: {"old": o, "new": n} for k, (o, n) in self.updated.items()}}


def is_ancestor(repo: Repository, old: str, new: str) -> bool:
    """True when commit ``old`` is ``new`` or one of its ancestors (both must be in the local store)."""
    if old == new:
        return True
    seen = set()
    stack = [new]
    while stack:
        oid = stack.pop()
        if oid in seen or not repo.store.has(oid):
            continue
        seen.add(oid)
        for p in repo.store.read_commit(oid).parents:
            if p == old:
                return True
            stack.append(p)
    return False


def remote_for(repo: Repository, name_or_url: str | None) -> tuple[str, Remote]:
    remotes = repo.remotes()
    name = name_or_url or ("origin" if "origin" in remotes else next(iter(remotes), None))
    if name is None:
        raise AdaptvcError("no remote configured: run 'adaptvc remote add origin URL'")
    if name in remotes:
        return name, open_remote(remotes[name], name, repo.store)
    if "/" in name or name.startswith(("hf://", "file://", ".")):
        return name, open_remote(name, "origin", repo.store)  # a URL given directly
    raise AdaptvcError(f"no remote named {name!r}; see 'adaptvc remote -v'")


def push(repo: Repository, remote_name: str | None = None, branches: list[str] | None = None,
         tags: bool = False, private: bool = False, progress: Progress = SILENT) -> SyncResult:
    name, remote = remote_for(repo, remote_name)
    if branches is None:
        current = repo.current_branch()
        if current is None:
            raise AdaptvcError("HEAD is detached: name the branch to push (adaptvc push origin BRANCH)")
        branches = [current]
    if not remote.exists():
        remote.create(private=private)
    remote_refs = remote.list_refs()
    updates: list[RefUpdate] = []
    for b in branches:
        local = repo.refs.read(HEADS + b)
        if local is None:
            raise AdaptvcError(f"no local branch {b!r} to push")
        old = remote_refs.get(HEADS + b)
        if old == local:
            continue
        if old is not None and not is_ancestor(repo, old, local):
            raise NonFastForwardError(HEADS + b, name)
        updates.append(RefUpdate(HEADS + b, old, local))
    if tags:
        for t, oid in repo.tags().items():
            old = remote_refs.get(TAGS + t)
            if old == oid:
                continue
            if old is not None:
                raise AdaptvcError(f"tag {t!r} points elsewhere on {name}; tags are not moved by push")
            updates.append(RefUpdate(TAGS + t, None, oid))
    result = SyncResult(name)
    if not updates:
        result.message = "everything up to date"
        return result
    result.bytes = remote.upload(repo.store, updates, progress)
    for u in updates:
        result.updated[u.ref] = (u.old, u.new)
        if u.ref.startswith(HEADS):
            _track(repo, name, u.ref[len(HEADS):], u.new)
    return result


def _track(repo: Repository, remote: str, branch: str, oid: str) -> None:
    ref = f"{REMOTES}{remote}/{branch}"
    repo.refs.set_if_equals(ref, repo.refs.read(ref), oid, f"update by sync with {remote}")


def fetch(repo: Repository, remote_name: str | None = None, progress: Progress = SILENT) -> SyncResult:
    name, remote = remote_for(repo, remote_name)
    remote_refs = remote.list_refs()
    missing = sorted({oid for oid in remote_refs.values() if not repo.store.has(oid)})
    result = SyncResult(name)
    result.bytes = remote.download(repo.store, missing, progress) if missing else 0
    for ref, oid in sorted(remote_refs.items()):
        if ref.startswith(HEADS):
            tracking = f"{REMOTES}{name}/{ref[len(HEADS):]}"
            old = repo.refs.read(tracking)
            if old != oid:
                _track(repo, name, ref[len(HEADS):], oid)
                result.updated[tracking] = (old, oid)
        elif ref.startswith(TAGS):
            old = repo.refs.read(ref)
            if old is None:  # new tags arrive; an existing local tag is never moved by a fetch
                repo.refs.set_if_equals(ref, None, oid, f"fetch from {name}")
                result.updated[ref] = (None, oid)
    result.message = "fetched" if result.updated else "already up to date"
    return result


def pull(repo: Repository, remote_name: str | None = None, force: bool = False,
         progress: Progress = SILENT) -> SyncResult:
    result = fetch(repo, remote_name, progress)
    name = result.remote
    branch = repo.current_branch()
    if branch is None:
        raise AdaptvcError("HEAD is detached: switch to a branch before pulling")
    theirs = repo.refs.read(f"{REMOTES}{name}/{branch}")
    if theirs is None:
        result.message = f"{name} has no branch {branch!r}; fetched only"
        return result
    ours = repo.head()
    if ours == theirs or (ours is not None and is_ancestor(repo, theirs, ours)):
        result.message = "already up to date"
        return result
    if ours is not None and not is_ancestor(repo, ours, theirs):
        raise AdaptvcError(
            f"your branch {branch!r} and {name}/{branch} have diverged; keep your versions on another branch "
            f"(adaptvc branch mine), then take theirs: adaptvc checkout {name}/{branch} and "
            f"adaptvc switch -c {branch}-new"
        )
    repo._update_work_tree(repo.show(theirs).snapshot.without(is_training_state), force, progress)
    repo.refs.set_if_equals(HEADS + branch, ours, theirs, f"pull: fast-forward from {name}")
    result.updated[HEADS + branch] = (ours, theirs)
    result.message = f"fast-forwarded {branch} to {theirs[:12]}"
    return result


def clone(url: str, directory: str | os.PathLike[str] | None = None, revision: str | None = None,
          progress: Progress = SILENT) -> Repository:
    from .repository import Repository

    remote = open_remote(url, "origin")
    if not remote.exists():
        raise AdaptvcError(f"nothing to clone at {url}{remote.missing_hint()}")
    target = Path(directory) if directory is not None else Path(url.rstrip("/").rsplit("/", 1)[-1])
    if target.exists() and any(target.iterdir()):
        raise AdaptvcError(f"{target} exists and is not empty; choose another folder")
    branch = remote.default_branch() or "main"
    check_ref_name(branch, "branch name")
    repo = Repository.init(target, branch=branch)
    repo.add_remote("origin", url)
    fetch(repo, "origin", progress)
    theirs = repo.refs.read(f"{REMOTES}origin/{branch}")
    if theirs is not None:
        repo.refs.set_if_equals(HEADS + branch, None, theirs, f"clone: from {url}")
        repo.checkout(revision or branch, force=True, progress=progress)
    elif revision is not None:
        repo.checkout(revision, force=True, progress=progress)
    return repo
