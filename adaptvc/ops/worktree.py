"""The work tree: the folder beside ``.adaptvc/`` that holds the adapter being worked on.

It is compared with a version by hashing (through the stat cache), and moved to another version by writing
only what the version needs: the files HEAD tracks may be replaced or removed (uncommitted changes to them
only with ``force``); a file HEAD does not track is never overwritten, not even with ``force`` — the work
tree may also be the training code's folder, and ``train.py`` is not ours.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

from ..errors import NoAdapterError, UncommittedChangesError, UntrackedFileError
from ..objects import Snapshot
from ..peft_layout import is_training_state
from ..progress import SILENT, Progress
from ..storage.base import ObjectStore
from ..storage.stat_cache import StatCache
from .capture import build_snapshot, find_adapter_files, read_config
from .ignore import ignore_for
from .materialise import file_hash, file_state, folder_lock, materialise, open_dirs
from .status import Status, compare_snapshots, config_changes


class WorkTree:
    def __init__(self, root: Path, admin_dir: Path, store: ObjectStore, allow_pickle: bool = False) -> None:
        self.root = root
        self.admin_dir = admin_dir
        self.store = store
        #: the repository was given consent to convert adapter_model.bin (commit --allow-pickle)
        self.allow_pickle = allow_pickle

    def stat_cache(self, folder: Path | None = None) -> StatCache | None:
        """The work tree's stat cache (other folders have none)."""
        if folder is not None and folder.resolve() != self.root.resolve():
            return None
        return StatCache(self.admin_dir, self.root)

    def snapshot(self, folder: Path | None = None) -> Snapshot:
        """A snapshot of ``folder`` (default: the work tree), hashed but not stored; empty without an adapter."""
        return self.snapshot_and_note(folder)[0]

    def snapshot_and_note(self, folder: Path | None = None) -> tuple[Snapshot, str | None]:
        """The snapshot, and why it is empty when it is (what the folder holds instead)."""
        src = folder if folder is not None else self.root
        try:
            files = find_adapter_files(src, allow_pickle=self.allow_pickle,
                                       ignore=ignore_for(src, self.root, self.admin_dir))
        except NoAdapterError as e:
            return Snapshot(()), str(e)
        return build_snapshot(files, None, cache=self.stat_cache(src)), None

    def status(self, head: str | None, head_snapshot: Snapshot | None, folder: Path | None = None,
               config_of=None) -> Status:
        """How the work tree (or ``folder``) differs from ``head_snapshot``, by tensor, config key and file.
        ``config_of(snapshot, path)`` reads a stored config."""
        src = folder if folder is not None else self.root
        old = head_snapshot.without(is_training_state) if head_snapshot is not None else None
        new, note = self.snapshot_and_note(src)
        st = compare_snapshots(old, new, head)
        keys: list[str] = []
        same_meaning: list[str] = []
        for path in st.files_modified + st.files_added + st.files_removed:
            prefix, _, name = path.rpartition("/")
            if name != "adapter_config.json":
                continue
            before = config_of(old, path) if old is not None and config_of is not None else {}
            after = read_config(src, path) if new.file(path) else {}
            changed = config_changes(before, after)
            keys += [f"{prefix}/{k}" if prefix else k for k in changed]
            if not changed and path in st.files_modified:
                same_meaning.append(path)  # only formatting or the order of a set: not a change
        modified = [p for p in st.files_modified if p not in same_meaning]
        config_changed = any(p.rpartition("/")[2] == "adapter_config.json"
                             for p in modified + st.files_added + st.files_removed)
        return replace(st, config_keys=sorted(keys), files_modified=modified, config_changed=config_changed,
                       note=note if not new.files else None)

    def untracked_conflicts(self, tracked: set[str], target: Snapshot) -> list[str]:
        """Files of ``target`` that stand in the work tree, are not tracked, and differ (or are not files)."""
        dirs = open_dirs(self.root)
        try:
            out = []
            for f in target.files:
                if f.path in tracked:
                    continue
                kind, _ = file_state(dirs, f.path)
                if kind == "absent":
                    continue
                if kind != "file" or file_hash(dirs, f.path) != f.hash:
                    out.append(f.path)
            return out
        finally:
            dirs.close()

    def update(self, current: Snapshot | None, target: Snapshot, force: bool, head: str | None,
               progress: Progress = SILENT, config_of=None) -> None:
        """Move the work tree from version ``current`` (what HEAD tracks) to ``target``."""
        target = target.without(is_training_state)
        tracked = {f.path for f in current.files if not is_training_state(f.path)} if current else set()
        with folder_lock(self.root):
            conflicts = self.untracked_conflicts(tracked, target)
            if conflicts:
                raise UntrackedFileError(conflicts)
            unchanged: set[str] = set()
            if not force:
                st = self.status(head, current, config_of=config_of)
                if not st.clean:
                    raise UncommittedChangesError(st.changed_paths)
                # the work tree is exactly ``current``: files the target shares with it are already right
                before = {f.path: f.hash for f in current.files} if current else {}
                unchanged = {f.path for f in target.files if before.get(f.path) == f.hash}
            keep = {f.path for f in target.files}
            remove = sorted(tracked - keep)
            write = Snapshot(tuple(f for f in target.files if f.path not in unchanged))
            materialise(self.store, write, self.root, progress, remove=remove, lock=False)
        cache = StatCache(self.admin_dir, self.root)
        for f in target.files:  # what was just written is known: the next status need not read it
            with contextlib.suppress(OSError):
                cache.record(f.path, os.lstat(self.root.joinpath(*f.path.split("/"))), f)
        cache.save()
