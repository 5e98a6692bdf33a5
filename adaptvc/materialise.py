"""Write a snapshot's files out of the store, byte for byte as they were committed.

Each file is rebuilt from its blobs into a temporary file beside its target while its whole-file hash is
recomputed; only when every file of the snapshot has been written and verified are they renamed into
place. A corrupt or missing object therefore changes nothing in the target folder, and a reader of the
folder never sees a half-written ``adapter_model.safetensors``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .atomic import fsync_dir, temp_name
from .errors import ChecksumMismatchError, ObjectNotFoundError
from .hashing import new_hasher
from .objects import FileEntry, Snapshot
from .paths import join_inside
from .progress import SILENT, Progress
from .store import ObjectStore


def _write_temp(store: ObjectStore, entry: FileEntry, target: Path, progress: Progress) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        whole = new_hasher()
        size = 0
        with os.fdopen(fd, "wb", buffering=0) as f:
            # the whole-file hash below covers every blob; a mismatch is then traced to its blob
            for chunk in _blob_chunks(store, entry.blobs()):
                whole.update(chunk)
                # a raw file may write less than asked; loop until the chunk is out
                while chunk:
                    n = f.write(chunk)
                    chunk = chunk[n:]
                    size += n
                    progress.update(n)
            os.fsync(f.fileno())
        got = whole.hexdigest()
        if got != entry.hash or size != entry.size:
            for oid in entry.blobs():  # name the corrupt object rather than just the file
                for _ in store.iter_chunks(oid):
                    pass
            raise ChecksumMismatchError(f"rebuilt file {entry.path}", entry.hash, got)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


#: compressed blobs decompressed ahead of the writer, on the other core
LOOKAHEAD = 4


def _blob_chunks(store: ObjectStore, blobs: list[str]) -> Iterator[memoryview]:
    """The bytes of ``blobs`` in order. Raw objects are streamed; compressed ones are decompressed a few
    blobs ahead in a thread pool (zstd releases the GIL), so decompression overlaps hashing and writing."""
    compressed = {oid for oid in blobs if store.is_compressed(oid)}
    if not compressed:
        for oid in blobs:
            yield from store.iter_chunks(oid, verify=False)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: dict[int, Future[bytes]] = {}
        for i, oid in enumerate(blobs):
            for j in range(i, min(i + LOOKAHEAD, len(blobs))):
                if j not in pending and blobs[j] in compressed:
                    pending[j] = pool.submit(store.decompressed, blobs[j])
            if i in pending:
                yield memoryview(pending.pop(i).result())
            else:
                yield from store.iter_chunks(oid, verify=False)


def missing_objects(store: ObjectStore, snapshot: Snapshot) -> list[str]:
    return [oid for f in snapshot.files for oid in f.blobs() if not store.has(oid)]


def materialise(store: ObjectStore, snapshot: Snapshot, out_dir: str | os.PathLike[str],
                progress: Progress = SILENT, remove: list[str] | None = None) -> list[str]:
    """Write every file of ``snapshot`` below ``out_dir``; then delete the relative paths in ``remove``
    (files of the previous version that this one lacks). Returns the paths written."""
    missing = missing_objects(store, snapshot)
    if missing:
        raise ObjectNotFoundError(missing[0])
    out = Path(out_dir)
    targets = [(f, join_inside(out, f.path)) for f in snapshot.files]
    temps: list[tuple[Path, Path]] = []
    progress.begin("checkout", sum(f.size for f in snapshot.files))
    try:
        for entry, target in targets:
            temps.append((_write_temp(store, entry, target, progress), target))
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        progress.end()
    for tmp, target in temps:
        os.replace(tmp, target)
    for rel in remove or []:
        p = join_inside(out, rel)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        with contextlib.suppress(OSError):
            if p.parent != out:
                p.parent.rmdir()  # a sub-folder adapter that is gone entirely
    for folder in {t.parent for _, t in temps}:
        fsync_dir(folder)
    return [f.path for f, _ in targets]
