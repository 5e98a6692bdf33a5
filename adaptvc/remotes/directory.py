"""A bare store in a folder (a local disk, a network mount): objects copied only when missing, each
re-hashed on arrival; refs moved with the same compare-and-swap as a local repository.

A shared folder may be written by other people: everything in it is reached without following links and
written with ``O_EXCL | O_NOFOLLOW`` (by the disk storage classes), its config is bounded, and a ref that is
not readable is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InvalidRefNameError, RefMovedError, SymlinkRefusedError
from ..hashing import HASH_NAME
from ..ops.graph import closure
from ..parsing import JsonError, parse_json
from ..progress import SILENT, Progress
from ..refnames import HEADS, TAGS, check_full_ref
from ..storage.atomic import open_dir, read_file, write_atomic
from ..storage.base import ObjectStore
from ..storage.disk_objects import STORE_FORMAT, STORE_FORMATS, DiskObjectStore
from ..storage.disk_refs import DiskRefs
from .base import NonFastForwardError, RefUpdate, Remote, RemoteError

LAYOUT = ("objects", "tmp", "refs/heads", "refs/tags", "logs")


class DirectoryRemote(Remote):
    def __init__(self, url: str, name: str = "origin", local: ObjectStore | None = None) -> None:
        self.url = url
        self.name = name
        path = url[len("file://"):] if url.startswith("file://") else url
        self.root = Path(path).expanduser()
        self.store = DiskObjectStore(self.root, packed=self._format() >= 2)
        self.refs = DiskRefs(self.root)
        self.skipped_refs = []

    def exists(self) -> bool:
        return (self.root / "config.json").is_file()

    def _format(self) -> int:
        """The store layout of the remote folder (2, packs, for a new one)."""
        try:
            raw = read_file(self.root, "config.json", 1 << 20)
            config = parse_json(raw) if raw else {}
        except (OSError, ValueError, JsonError):
            return STORE_FORMAT
        found = config.get("format") if isinstance(config, dict) else None
        return found if found in STORE_FORMATS else STORE_FORMAT

    def _check(self) -> None:
        if not self.exists():
            raise RemoteError(f"no adaptvc store at {self.url}; 'adaptvc push' creates it")
        try:
            raw = read_file(self.root, "config.json", 1 << 20)
            config = parse_json(raw or b"")
        except (OSError, ValueError, JsonError):
            config = {}
        if not isinstance(config, dict) or config.get("format") not in STORE_FORMATS:
            raise RemoteError(f"{self.url} is not an adaptvc store (formats {', '.join(map(str, STORE_FORMATS))})")

    def create(self, private: bool = False) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for sub in LAYOUT:
                os.close(open_dir(self.root, sub, create=True))
        except SymlinkRefusedError as e:
            raise RemoteError(f"{self.url}: {e}") from None
        if self.refs.head_raw() is None:
            self.refs.init_head(HEADS + "main")
        if not self.exists():
            write_atomic(self.root, "config.json",
                         json.dumps({"format": STORE_FORMAT, "hash": HASH_NAME, "bare": True}, indent=2).encode())
            self.store = DiskObjectStore(self.root, packed=True)

    def list_refs(self) -> dict[str, str]:
        self._check()
        out = {HEADS + k: v for k, v in self.refs.list(HEADS).items()}
        out.update({TAGS + k: v for k, v in self.refs.list(TAGS).items()})
        self.skipped_refs = []
        self.unreadable_refs = {}
        for bad in self.refs.bad_refs():
            try:
                check_full_ref(bad.ref)
            except InvalidRefNameError:
                self.skipped_refs.append(bad.ref)
            else:
                self.unreadable_refs[bad.ref] = bad.problem
        return out

    def default_branch(self) -> str | None:
        self._check()
        try:
            target = self.refs.head_target()
        except Exception:
            target = None
        if target and self.refs.list(HEADS).get(target[len(HEADS):]):
            return target[len(HEADS):]
        return super().default_branch()

    def download(self, store: ObjectStore, commits: list[str], progress: Progress = SILENT) -> int:
        self._check()
        wanted = closure(self.store, commits, store.has)  # every snapshot is decoded (and checked) here
        progress.begin("fetch", sum(self.store.size(o) for o in wanted))
        moved = 0
        try:
            for oid in wanted:
                n = store.copy_from(self.store, oid)
                moved += n
                progress.update(n)
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
        moved = 0
        try:
            for oid in wanted:
                n = self.store.copy_from(store, oid)
                moved += n
                progress.update(n)
            self.store.flush()
            for u in updates:
                try:
                    self.refs.set_if_equals(u.ref, u.old, u.new, f"push: {u.ref}")
                except RefMovedError:
                    raise NonFastForwardError(u.ref, self.name) from None
        finally:
            progress.end()
            self.store.end_session()
        return moved
