"""A bare store in a folder (a local disk, a network mount): objects copied only when missing, each
re-hashed on arrival; refs moved with the same compare-and-swap as a local repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_atomic
from ..errors import ChecksumMismatchError, RefMovedError
from ..hashing import HASH_NAME
from ..objects import FORMAT_VERSION
from ..progress import SILENT, Progress
from ..refs import HEADS, TAGS, Refs
from ..store import ObjectStore
from .base import NonFastForwardError, RefUpdate, Remote, RemoteError

#: objects up to this size are copied through memory; larger ones are streamed
MAX_IN_MEMORY = 64 << 20


def copy_verified(src: ObjectStore, dst: ObjectStore, oid: str, progress: Progress) -> int:
    """Copy one object, re-hashing it on the way: a corrupt object never lands under its id."""
    if dst.freshen(oid):
        return 0
    size = src.size(oid)
    if size <= MAX_IN_MEMORY:
        dst.put_known(oid, src.read(oid))  # read() re-hashes
    else:
        with src.open(oid) as f:
            got = dst.put_stream(f, size)
        if got != oid:
            raise ChecksumMismatchError(f"object {oid}", oid, got)
    progress.update(size)
    return size


def closure(store: ObjectStore, commits: list[str], have: Callable[[str], bool]) -> list[str]:
    """Objects reachable from ``commits`` that ``have(oid)`` says are missing, in a safe order: blobs, then
    snapshots, then commits oldest first. A commit the other side has is taken to come with its whole past
    (objects always travel before the commit that names them)."""
    blobs: list[str] = []
    snaps: list[str] = []
    new_commits: list[str] = []
    seen: set[str] = set()
    stack = list(commits)
    while stack:
        oid = stack.pop()
        if oid in seen or have(oid):
            continue
        seen.add(oid)
        commit = store.read_commit(oid)
        new_commits.append(oid)
        stack.extend(commit.parents)
        if commit.snapshot not in seen and not have(commit.snapshot):
            seen.add(commit.snapshot)
            snaps.append(commit.snapshot)
            for f in store.read_snapshot(commit.snapshot).files:
                for b in f.blobs():
                    if b not in seen and not have(b):
                        seen.add(b)
                        blobs.append(b)
    new_commits.reverse()  # parents before children
    return blobs + snaps + new_commits


class DirectoryRemote(Remote):
    def __init__(self, url: str, name: str = "origin") -> None:
        self.url = url
        self.name = name
        path = url[len("file://"):] if url.startswith("file://") else url
        self.root = Path(path).expanduser()
        self.store = ObjectStore(self.root)
        self.refs = Refs(self.root)

    def exists(self) -> bool:
        return (self.root / "config.json").is_file()

    def _check(self) -> None:
        if not self.exists():
            raise RemoteError(f"no adaptvc store at {self.url}; 'adaptvc push' creates it")
        try:
            config = json.loads((self.root / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION:
            raise RemoteError(f"{self.url} is not an adaptvc store of format {FORMAT_VERSION}")

    def create(self, private: bool = False) -> None:
        for sub in ("objects", "tmp", "refs/heads", "refs/tags", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not (self.root / "HEAD").exists():
            self.refs.init_head(HEADS + "main")
        if not (self.root / "config.json").exists():
            write_atomic(self.root / "config.json",
                         json.dumps({"format": FORMAT_VERSION, "hash": HASH_NAME, "bare": True}, indent=2).encode())

    def list_refs(self) -> dict[str, str]:
        self._check()
        out = {HEADS + k: v for k, v in self.refs.list(HEADS).items()}
        out.update({TAGS + k: v for k, v in self.refs.list(TAGS).items()})
        return out

    def default_branch(self) -> str | None:
        self._check()
        target = self.refs.head_target()
        if target and self.refs.read(target):
            return target[len(HEADS):]
        return super().default_branch()

    def download(self, store: ObjectStore, commits: list[str], progress: Progress = SILENT) -> int:
        self._check()
        wanted = closure(self.store, commits, store.has)
        progress.begin("fetch", sum(self.store.size(o) for o in wanted))
        try:
            moved = sum(copy_verified(self.store, store, oid, progress) for oid in wanted)
        finally:
            progress.end()
        store.flush()
        return moved

    def upload(self, store: ObjectStore, updates: list[RefUpdate], progress: Progress = SILENT) -> int:
        if not self.exists():
            self.create()
        self._check()
        wanted = closure(store, [u.new for u in updates], self.store.has)
        progress.begin("push", sum(store.size(o) for o in wanted))
        try:
            moved = sum(copy_verified(store, self.store, oid, progress) for oid in wanted)
        finally:
            progress.end()
        self.store.flush()
        for u in updates:
            try:
                self.refs.set_if_equals(u.ref, u.old, u.new, f"push: {u.ref}")
            except RefMovedError:
                raise NonFastForwardError(u.ref, self.name) from None
        return moved
