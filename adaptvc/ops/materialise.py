"""Write a snapshot's files out of the store, byte for byte as they were committed — into a folder nobody
else is writing, never through a link, never over a file adaptvc did not write.

Each file is rebuilt from its blobs into a temporary file beside its target (created ``O_EXCL |
O_NOFOLLOW``) while its whole-file hash is recomputed; only when every file of the snapshot has been written
and verified are they renamed into place. A corrupt or missing object therefore changes nothing in the
target folder, and a reader of the folder never sees a half-written ``adapter_model.safetensors``.

A folder being written is locked (``.adaptvc-checkout.lock``, for the duration of the checkout): a second
checkout into it waits or is refused, so two checkouts never leave one version's config beside the other's
weights; temporary files left by a killed checkout are removed by the next one. ``checkout -o DIR`` records
what it wrote in the repository (``.adaptvc/checkouts/``), which is how a later ``checkout -f`` knows exactly
which files it may replace or remove; the folder itself holds only the adapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    ChecksumMismatchError,
    FolderBusyError,
    ObjectNotFoundError,
    SymlinkRefusedError,
    UntrackedFileError,
    WouldOverwriteError,
)
from ..hashing import hash_bytes, hash_stream, new_hasher
from ..objects import FileEntry, Snapshot
from ..parsing import JsonError, parse_json
from ..peft_layout import check_snapshot_path
from ..progress import SILENT, Progress
from ..storage.atomic import TEMP_PREFIX, create_exclusive, open_dir, read_file, temp_name, write_all, write_atomic
from ..storage.base import ObjectStore
from ..storage.locks import LockInfo, held

LOCK_NAME = ".adaptvc-checkout.lock"
#: how long a checkout waits for another one writing the same folder
LOCK_TIMEOUT = 10.0
#: compressed blobs decompressed ahead of the writer, on the other core
LOOKAHEAD = 4


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float | None = None) -> Iterator[int]:
    """Hold ``folder``'s checkout lock (creating the folder if needed); yields the folder's descriptor."""
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def busy(info: LockInfo | None) -> None:
        raise FolderBusyError(str(folder), info.pid if info else None)

    try:
        with held(fd, LOCK_NAME, timeout, busy):
            yield fd
    finally:
        os.close(fd)


class _Dirs:
    """Descriptors of the folders of one checkout, opened without following links and closed together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fds: dict[str, int] = {}

    def get(self, folder: str, create: bool) -> int | None:
        if folder not in self.fds:
            try:
                self.fds[folder] = open_dir(self.root, folder, create=create)
            except FileNotFoundError:
                return None
            except SymlinkRefusedError:
                raise SymlinkRefusedError(folder, writing=True) from None
        return self.fds[folder]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _remove_debris(dirs: _Dirs, folders: Iterable[str]) -> None:
    """Temporary files of a killed checkout (we hold the folder's lock: nobody else is writing here)."""
    for folder in sorted(set(folders)):
        fd = dirs.get(folder, create=False)
        if fd is None:
            continue
        for name in os.listdir(fd):
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(name, dir_fd=fd)


def _split(rel: str) -> tuple[str, str]:
    folder, _, name = rel.rpartition("/")
    return folder, name


def file_state(dirs: _Dirs, rel: str) -> tuple[str, os.stat_result | None]:
    """("absent" | "file" | "other", lstat) of ``rel`` below the root, without following links."""
    folder, name = _split(rel)
    fd = dirs.get(folder, create=False)
    if fd is None:
        return "absent", None
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return "absent", None
    return ("file" if stat.S_ISREG(st.st_mode) else "other"), st


def file_hash(dirs: _Dirs, rel: str) -> str | None:
    """The xxh3-128 of the regular file ``rel`` (None when absent or not a regular file)."""
    folder, name = _split(rel)
    fd = dirs.get(folder, create=False)
    if fd is None:
        return None
    found = hash_regular_at(fd, name)
    return found[0] if found is not None else None


def hash_regular_at(fd: int, name: str) -> tuple[str, int] | None:
    """(xxh3-128, size) of the regular file ``name`` in the folder ``fd``, opened without following a link
    (and without blocking on a FIFO); None for anything else or when it cannot be opened."""
    try:
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    with os.fdopen(f, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(f).st_mode):
            return None
        return hash_stream(fh)


def _blob_chunks(store: ObjectStore, entry: FileEntry) -> Iterator[memoryview]:
    """The bytes of a file's blobs in order. Raw objects are streamed; compressed ones are decompressed a few
    blobs ahead in a thread pool (zstd releases the GIL), so decompression overlaps hashing and writing."""
    blobs = entry.blobs()
    sizes = [entry.layout.header_size, *(t.size for t in entry.layout.tensors)] if entry.layout else [entry.size]
    compressed = {i for i, oid in enumerate(blobs) if store.is_compressed(oid)}
    if not compressed:
        for oid in blobs:
            yield from store.iter_chunks(oid, verify=False)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: dict[int, Future[bytes]] = {}
        for i, oid in enumerate(blobs):
            for j in range(i, min(i + LOOKAHEAD, len(blobs))):
                if j not in pending and j in compressed:
                    pending[j] = pool.submit(store.decompressed, blobs[j], sizes[j])
            if i in pending:
                yield memoryview(pending.pop(i).result())
            else:
                yield from store.iter_chunks(oid, verify=False)


def _write_temp(store: ObjectStore, entry: FileEntry, dir_fd: int, progress: Progress) -> str:
    name = temp_name(_split(entry.path)[1])
    fd = create_exclusive(dir_fd, name)
    try:
        whole = new_hasher()
        size = 0
        try:
            # the whole-file hash below covers every blob; a mismatch is then traced to its blob
            for chunk in _blob_chunks(store, entry):
                whole.update(chunk)
                n = write_all(fd, chunk)
                size += n
                progress.update(n)
            os.fsync(fd)
        finally:
            os.close(fd)
        got = whole.hexdigest()
        if got != entry.hash or size != entry.size:
            for oid in entry.blobs():  # name the corrupt object rather than just the file
                for _ in store.iter_chunks(oid):
                    pass
            raise ChecksumMismatchError(f"rebuilt file {entry.path}", entry.hash, got)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    return name


def missing_objects(store: ObjectStore, snapshot: Snapshot) -> list[str]:
    return [oid for f in snapshot.files for oid in f.blobs() if not store.has(oid)]


@dataclass
class Plan:
    """What a checkout will do in its folder: files to write, files already right, files to remove."""

    write: list[FileEntry] = field(default_factory=list)
    same: list[FileEntry] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def materialise(store: ObjectStore, snapshot: Snapshot, out_dir: str | os.PathLike[str],
                progress: Progress = SILENT, remove: Iterable[str] = (), skip_identical: bool = False,
                lock: bool = True) -> list[str]:
    """Write every file of ``snapshot`` below ``out_dir``; then delete the relative paths in ``remove``
    (files of the previous version that this one lacks). Returns the paths written. The caller has decided
    that every target may be replaced (see :func:`plan_checkout`)."""
    missing = missing_objects(store, snapshot)
    if missing:
        raise ObjectNotFoundError(missing[0])
    out = Path(out_dir)
    remove = [check_snapshot_path(r) for r in remove]
    with folder_lock(out) if lock else contextlib.nullcontext():
        dirs = _Dirs(out)
        try:
            return _write_all(store, snapshot, dirs, progress, remove, skip_identical)
        finally:
            dirs.close()


def _write_all(store: ObjectStore, snapshot: Snapshot, dirs: _Dirs, progress: Progress, remove: list[str],
               skip_identical: bool) -> list[str]:
    folders = {_split(f.path)[0] for f in snapshot.files} | {_split(r)[0] for r in remove} | {""}
    _remove_debris(dirs, folders)
    todo = [f for f in snapshot.files if not (skip_identical and file_hash(dirs, f.path) == f.hash)]
    temps: list[tuple[int, str, str]] = []  # (folder fd, temporary name, final name)
    progress.begin("checkout", sum(f.size for f in todo))
    try:
        for entry in todo:
            folder, name = _split(entry.path)
            fd = dirs.get(folder, create=True)
            assert fd is not None
            temps.append((fd, _write_temp(store, entry, fd, progress), name))
    except BaseException:
        for fd, tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
        raise
    finally:
        progress.end()
    for fd, tmp, name in temps:
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    for rel in remove:
        folder, name = _split(rel)
        fd = dirs.get(folder, create=False)
        if fd is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
        if folder and not os.listdir(fd):  # a sub-folder adapter that is gone entirely
            root = dirs.get("", create=False)
            with contextlib.suppress(OSError):
                os.rmdir(folder, dir_fd=root)
    for fd in {fd for fd, _, _ in temps} | ({dirs.get("", create=False)} if remove else set()):
        if fd is not None:
            os.fsync(fd)
    return [f.path for f in todo]


# -- checkout into a folder of its own (-o DIR) ------------------------------------------------------------
def _record_name(out: Path) -> str:
    return hash_bytes(os.fsencode(out.resolve())) + ".json"


def read_record(records: Path | None, out: Path) -> dict[str, str]:
    """``{path: hash}`` of the files the last checkout from this repository into ``out`` wrote ({} when none or
    unreadable)."""
    if records is None:
        return {}
    try:
        raw = read_file(records, _record_name(out), 1 << 20)
        data = parse_json(raw) if raw is not None else {}
    except (OSError, ValueError, JsonError):
        return {}
    if not isinstance(data, dict) or data.get("path") != str(out.resolve()):
        return {}
    files = data.get("files")
    written: dict[str, str] = {}
    for path, h in files.items() if isinstance(files, dict) else ():
        with contextlib.suppress(Exception):
            written[check_snapshot_path(path)] = str(h)
    return written


def write_record(records: Path, out: Path, commit_id: str, snapshot: Snapshot) -> None:
    data = {"format": 1, "path": str(out.resolve()), "commit": commit_id,
            "files": {f.path: f.hash for f in snapshot.files}}
    records.mkdir(parents=True, exist_ok=True)
    write_atomic(records, _record_name(out), json.dumps(data, indent=1, sort_keys=True).encode())


def plan_checkout(dirs: _Dirs, snapshot: Snapshot, written: dict[str, str], force: bool) -> Plan:
    """Decide, for a folder whose adaptvc-written files are ``written`` ({path: hash}), what a checkout of
    ``snapshot`` does. A file adaptvc did not write is never replaced; one it wrote and that was changed
    since is replaced only with ``force``."""
    plan = Plan()
    foreign, modified = [], []
    for f in snapshot.files:
        kind, _ = file_state(dirs, f.path)
        if kind == "absent":
            plan.write.append(f)
            continue
        current = file_hash(dirs, f.path) if kind == "file" else None
        if current == f.hash:
            plan.same.append(f)
        elif f.path not in written:
            foreign.append(f.path)
        elif current != written[f.path] and not force:
            modified.append(f.path)
        else:
            plan.write.append(f)
    keep = {f.path for f in snapshot.files}
    for path, h in sorted(written.items()):
        if path in keep or file_state(dirs, path)[0] == "absent":
            continue
        if file_hash(dirs, path) != h and not force:
            modified.append(path)
        plan.remove.append(path)
    if foreign:
        raise UntrackedFileError([str(dirs.root / p) for p in foreign], " (it was not written by adaptvc)")
    if modified:
        raise WouldOverwriteError([str(dirs.root / p) for p in modified],
                                  "they were changed since adaptvc wrote them: use --force to replace them")
    return plan


def checkout_into(store: ObjectStore, snapshot: Snapshot, out: Path, commit_id: str, force: bool = False,
                  progress: Progress = SILENT, records: Path | None = None) -> Plan:
    """Write ``snapshot`` into its own folder ``out``, replacing exactly the files of the version a previous
    checkout wrote there (as recorded in ``records``, the repository's list of its checkouts). The folder
    holds nothing but the adapter's files afterwards. Returns what was done."""
    missing = missing_objects(store, snapshot)
    if missing:
        raise ObjectNotFoundError(missing[0])
    with folder_lock(out):
        dirs = _Dirs(out)
        try:
            plan = plan_checkout(dirs, snapshot, read_record(records, out), force)
            _write_all(store, Snapshot(tuple(plan.write)), dirs, progress, plan.remove, skip_identical=False)
        finally:
            dirs.close()
        if records is not None:
            write_record(records, out, commit_id, snapshot)
    return plan


def open_dirs(root: Path) -> _Dirs:
    return _Dirs(root)
