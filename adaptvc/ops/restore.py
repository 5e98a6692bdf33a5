"""``restore``: put files, or some tensors, of a version into the work tree; HEAD does not move.

* ``restore --source REV PATH…`` writes those files of REV (paths or globs over REV's files), byte for byte.
* ``restore --source REV --tensor GLOB…`` rewrites ``adapter_model.safetensors`` so that the tensors the
  globs name are REV's (a named tensor REV lacks is removed, one only REV has is added) and every other tensor
  keeps the bytes it has in the work tree.

Files are written as a checkout writes them (temporary file created ``O_EXCL | O_NOFOLLOW``, verified, renamed
into place, under the folder's checkout lock). Restoring discards uncommitted changes to the files HEAD
tracks — that is what it is for — but a file HEAD does not track is never replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..errors import AdaptvcError, FileChangedError, InvalidInputError, UntrackedFileError
from ..objects import Snapshot, TensorEntry
from ..peft_layout import WEIGHTS_NAME, check_snapshot_path
from ..progress import SILENT, Progress
from ..safetensors_format import read_header
from ..storage.atomic import atomic_writer, write_all
from ..storage.base import ObjectStore
from .capture import open_adapter_file
from .compose import encode_header
from .materialise import file_hash, file_state, folder_lock, materialise, open_dirs

_GLOB_CHARS = "*?["
MAX_SELECTORS = 256


@dataclass(frozen=True)
class RestoreResult:
    source: str
    files: tuple[str, ...] = ()
    tensors_restored: tuple[str, ...] = ()
    tensors_added: tuple[str, ...] = ()
    tensors_removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "files": list(self.files),
                "tensors": {"restored": list(self.tensors_restored), "added": list(self.tensors_added),
                            "removed": list(self.tensors_removed)}}


def _check_selectors(paths: list[str], tensors: list[str]) -> None:
    if not paths and not tensors:
        raise InvalidInputError("restore", "needs a PATH or --tensor GLOB (what to restore)")
    if len(paths) + len(tensors) > MAX_SELECTORS:
        raise InvalidInputError("restore", f"accepts at most {MAX_SELECTORS} paths and globs")
    for s in (*paths, *tensors):
        if not isinstance(s, str) or not s or len(s) > 1024:
            raise InvalidInputError(f"{str(s)[:40]!r}", "must be 1 to 1024 characters")


def select_files(source: Snapshot, paths: list[str], label: str) -> list[str]:
    """The files of ``source`` that ``paths`` (paths or globs) name; each must name at least one."""
    chosen: dict[str, None] = {}
    names = [f.path for f in source.files]
    for p in paths:
        if any(c in p for c in _GLOB_CHARS):
            hits = [n for n in names if fnmatchcase(n, p)]
            if not hits:
                raise InvalidInputError(f"pathspec {p!r}", f"matches no file of {label}")
        else:
            check_snapshot_path(p)  # outside the adapter layout: refused before anything else
            if source.file(p) is None:
                raise InvalidInputError(f"path {p!r}", f"is not a file of {label}")
            hits = [p]
        chosen.update(dict.fromkeys(hits))
    return list(chosen)


def restore(store: ObjectStore, root: Path, source_id: str, source: Snapshot, head: Snapshot | None,
            paths: list[str] | tuple[str, ...] = (), tensors: list[str] | tuple[str, ...] = (), *, label: str = "",
            progress: Progress = SILENT) -> RestoreResult:
    """Restore ``paths`` (files) and ``tensors`` (globs over qualified tensor names) of ``source`` (the
    snapshot of commit ``source_id``) into the work tree ``root``; ``head`` is what HEAD tracks."""
    paths, tensors = list(paths), list(tensors)
    _check_selectors(paths, tensors)
    label = label or source_id[:12]
    tracked = {f.path for f in head.files} if head is not None else set()
    files = select_files(source, paths, label) if paths else []
    plans = _tensor_plans(source, tensors, root, tracked, label) if tensors else []
    dirs = open_dirs(root)
    try:
        untracked = [p for p in files if p not in tracked and file_state(dirs, p)[0] != "absent"
                     and file_hash(dirs, p) != source.file(p).hash]  # type: ignore[union-attr]
    finally:
        dirs.close()
    if untracked:
        raise UntrackedFileError(untracked, " (HEAD does not track it)")
    written: list[str] = []
    if files:
        written = materialise(store, Snapshot(tuple(source.file(p) for p in files)), root, progress,  # type: ignore
                              skip_identical=True)
    restored, added, removed = [], [], []
    if plans:
        with folder_lock(root):
            for plan in plans:
                _rewrite(store, root, plan)
                restored += plan.restored
                added += plan.added
                removed += plan.removed
    return RestoreResult(source_id, tuple(written), tuple(restored), tuple(added), tuple(removed))


@dataclass
class _TensorPlan:
    path: str                     # the safetensors file in the work tree
    folder: str
    entries: list[tuple[TensorEntry, int | None]] = field(default_factory=list)  # (entry, offset in the file or None)
    metadata: dict[str, str] | None = None
    stat: os.stat_result | None = None
    restored: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _tensor_plans(source: Snapshot, globs: list[str], root: Path, tracked: set[str], label: str) -> list[_TensorPlan]:
    src = dict(source.tensors())
    weights = sorted({f.path for f in source.files if f.path.rpartition("/")[2] == WEIGHTS_NAME} |
                     {p for p in tracked if p.rpartition("/")[2] == WEIGHTS_NAME})
    plans: list[_TensorPlan] = []
    matched = dict.fromkeys(globs, False)
    for path in weights:
        folder = path.rpartition("/")[0]
        prefix = f"{folder}/" if folder else ""
        try:
            with open_adapter_file(root, path) as f:
                st = os.fstat(f.fileno())
                header = read_header(f, st.st_size, path)
        except FileNotFoundError:
            header, st = None, None
        current = [(prefix + t.name, t) for t in header.tensors] if header is not None else []
        names = [n for n, _ in current] + [n for n in src if n.startswith(prefix) and "/" not in n[len(prefix):]]

        def hit(name: str) -> bool:
            found = False
            for g in globs:
                if fnmatchcase(name, g):
                    matched[g] = True
                    found = True
            return found

        selected = {n for n in names if hit(n)}
        if not selected:
            continue
        if header is None or st is None:
            raise AdaptvcError(f"the work tree has no {path} to restore tensors into; restore the whole file: "
                               f"adaptvc restore --source {label} {path}")
        if path not in tracked:
            raise UntrackedFileError([path], " (HEAD does not track it; restoring tensors would rewrite it)")
        if source.file(path) is None:
            raise AdaptvcError(f"{label} has no {path}: there is nothing to restore its tensors from")
        plan = _TensorPlan(path, folder, metadata=header.metadata, stat=st)
        offset = header.size
        for (name, t) in current:
            if name in selected:
                if name in src:
                    plan.entries.append((src[name], None))
                    plan.restored.append(name)
                else:
                    plan.removed.append(name)
            else:
                plan.entries.append((TensorEntry(t.name, t.dtype, t.shape, "", t.nbytes), offset + t.begin))
        have = {n for n, _ in current}
        for name in sorted(n for n in selected if n in src and n not in have):
            plan.entries.append((src[name], None))
            plan.added.append(name)
        plans.append(plan)
    unmatched = [g for g, ok in matched.items() if not ok]
    if unmatched:
        raise InvalidInputError(f"--tensor {unmatched[0]!r}", f"matches no tensor of {label} or of the work tree")
    return plans


def _rewrite(store: ObjectStore, root: Path, plan: _TensorPlan) -> None:
    """Write the new file beside the old one, streaming each tensor from the store or from the old file."""
    entries = [TensorEntry(e.name, e.dtype, e.shape, e.blob or "0" * 32, e.size) for e, _ in plan.entries]
    header = encode_header(entries, plan.metadata)
    with open_adapter_file(root, plan.path) as old, atomic_writer(root, plan.path) as out:
        write_all(out.fileno(), header)
        for entry, offset in plan.entries:
            if offset is None:
                for chunk in store.iter_chunks(entry.blob):
                    write_all(out.fileno(), chunk)
            else:
                old.seek(offset)
                remaining = entry.size
                while remaining:
                    chunk = old.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise FileChangedError(plan.path)
                    write_all(out.fileno(), chunk)
                    remaining -= len(chunk)
        after = os.fstat(old.fileno())
        assert plan.stat is not None
        if (after.st_size, after.st_mtime_ns) != (plan.stat.st_size, plan.stat.st_mtime_ns):
            raise FileChangedError(plan.path)
