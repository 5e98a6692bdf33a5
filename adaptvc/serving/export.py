"""Export a version for serving: an immutable per-version folder (or bucket prefix), complete before it exists.

Locally, the folder ``DEST/support-bot@3fa9c1d2e4b5`` is built under a temporary name in ``DEST`` (created
``O_EXCL``, never through a link), every file is re-hashed from disk against the record, and only then is the
folder renamed to its final name, with a rename that refuses to replace anything. A reader therefore finds
the complete folder or no folder. An existing folder of that name is reused only when its ``adaptvc.json``
says it is this very export and every file still matches; anything else there is refused, never replaced.

In a bucket (``s3://bucket/prefix/``) the same layout is written with create-only puts (``If-None-Match``),
``adaptvc.json`` last: a reader that finds the record finds every file. Nothing is ever overwritten.

Before exporting, the adapter's module names and shapes are checked against its base model when the base is
at hand (a local folder, or the local Hugging Face cache): an adapter whose modules match nothing in the base
would be served as a silent no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    AdaptvcError,
    ChecksumMismatchError,
    FolderBusyError,
    NoAdapterError,
    ObjectNotFoundError,
    UntrackedFileError,
)
from ..hashing import hash_bytes, new_hasher
from ..objects import BasePin, Commit, FileEntry, Snapshot
from ..ops.materialise import hash_regular_at, materialise
from ..peft_layout import adapter_folder, is_config_path, is_training_state
from ..progress import SILENT, Progress
from ..remotes.registry import scheme_of
from ..storage.atomic import remove_tree, temp_name, temp_owner, write_atomic
from ..storage.base import MAX_METADATA_OBJECT, ChunkReader, ObjectStore
from ..storage.locks import LockInfo, held, pid_alive
from .layout import (
    MAX_RECORD,
    RECORD_NAME,
    ExportedFile,
    ExportRecord,
    InvalidRecordError,
    Rewrite,
    check_name,
    check_served_base,
    rewrite_base,
    version_of,
)

#: the lock held while adaptvc writes into a serving folder (exports, deploys, pruning)
LOCK_NAME = ".adaptvc-deploy.lock"
LOCK_TIMEOUT = 30.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ExportConflictError(UntrackedFileError):
    """Something other than this very export stands where it would go: never replaced."""

    def __init__(self, where: str, reason: str) -> None:
        self.paths = [where]
        AdaptvcError.__init__(self, f"{where} {reason}; adaptvc never replaces it: move it away (or choose "
                                    "another --name), then run the command again")


# -- what an export holds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportPlan:
    """Everything an export writes: the committed files (``snapshot``), the rewritten configs (``overrides``)
    and the record."""

    record: ExportRecord
    snapshot: Snapshot
    overrides: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return self.record.folder

    @property
    def record_bytes(self) -> bytes:
        return self.record.encode()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.record.files) + len(self.record_bytes)


def plan_export(store: ObjectStore, commit: Commit, name: str, served_base: str | None = None) -> ExportPlan:
    """What exporting ``commit`` as ``name`` writes (training state left out; with ``served_base``, each
    adapter config's ``base_model_name_or_path`` rewritten, and nothing else)."""
    check_name(name)
    if served_base is not None:
        check_served_base(served_base)
    snapshot = store.read_snapshot(commit.snapshot).without(is_training_state)
    configs = [f for f in snapshot.files if is_config_path(f.path)]
    if not configs:
        raise NoAdapterError(f"version {commit.id[:12]}", "it has no adapter_config.json to serve")
    overrides: dict[str, bytes] = {}
    rewrites = []
    if served_base is not None:
        for f in configs:
            data = store.read(f.hash, MAX_METADATA_OBJECT)
            new, original = rewrite_base(data, served_base, f.path)
            if new != data:
                overrides[f.path] = new
                rewrites.append(Rewrite(f.path, "base_model_name_or_path", original, served_base, f.size, f.hash))
    files = tuple(ExportedFile(f.path, len(overrides[f.path]), hash_bytes(overrides[f.path])) if f.path in overrides
                  else ExportedFile(f.path, f.size, f.hash) for f in snapshot.files)
    record = ExportRecord(name=name, version=version_of(commit.id, served_base), commit=commit.id,
                          snapshot=commit.snapshot, message=commit.message, base=commit.base,
                          served_base=served_base, files=files, rewritten=tuple(rewrites))
    return ExportPlan(record, snapshot, overrides)


def check_base_at_hand(snapshot: Snapshot, pin: BasePin, served_base: str | None = None,
                       cache_file: Path | None = None) -> list[str]:
    """Check every adapter of the version against each base that is on this machine (the pinned one, and the
    served one when it names a folder or a cached Hub model); raise ``BaseMismatchError`` naming what differs.
    Returns the bases checked (none when no base is at hand)."""
    from ..hfcache import resolve_base_folder

    def here(name: str) -> bool:
        try:
            return resolve_base_folder(name, pin.revision) is not None
        except (OSError, ValueError):  # a name no file system can hold is not a folder at hand
            return False

    at_hand = [c for c in dict.fromkeys([pin.local_path, pin.name_or_path, served_base]) if c and here(c)]
    if not at_hand:
        return []
    from ..basemodel import verify_folder_base

    folders = sorted({adapter_folder(f.path) for f in snapshot.files if is_config_path(f.path)})
    for base in at_hand:
        for folder in folders:
            verify_folder_base(snapshot, pin, base, folder, cache_file)
    return at_hand


@dataclass(frozen=True)
class ExportResult:
    """What an export did. ``written`` is False when the export was already there (and was verified)."""

    name: str
    version: str
    commit: str
    location: str
    written: bool
    files: int
    bytes: int
    served_base: str | None = None
    rewritten: tuple[str, ...] = ()
    bases_checked: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "folder": self.folder, "commit": self.commit,
                "location": self.location, "written": self.written, "files": self.files, "bytes": self.bytes,
                "served_base": self.served_base, "rewritten": list(self.rewritten),
                "bases_checked": list(self.bases_checked)}


# -- checking a folder against its record ------------------------------------------------------------------
@dataclass(frozen=True)
class FolderCheck:
    """What a version folder holds: its record (None when it has no valid one) and every problem found."""

    entry: str
    record: ExportRecord | None
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return self.record is not None and not self.problems


def _read_record(fd: int, where: str) -> tuple[ExportRecord | None, str | None]:
    try:
        f = os.open(RECORD_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return None, f"no {RECORD_NAME}: not written by adaptvc"
    except OSError:
        return None, f"{RECORD_NAME} is a link or cannot be read: not written by adaptvc"
    with os.fdopen(f, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(f).st_mode):
            return None, f"{RECORD_NAME} is not a regular file: not written by adaptvc"
        data = fh.read(MAX_RECORD + 1)
    try:
        return ExportRecord.from_bytes(data, f"{where}/{RECORD_NAME}"), None
    except InvalidRecordError as e:
        return None, f"{RECORD_NAME} {e.reason}: not written by adaptvc"


def _content_problems(fd: int, record: ExportRecord) -> list[str]:
    """Every way the folder's files differ from what its record lists (missing, extra, changed, linked)."""
    expected = {f.path: f for f in record.files}
    problems: list[str] = []
    seen: set[str] = set()

    def check(dir_fd: int, name: str, rel: str) -> None:
        seen.add(rel)
        want = expected.get(rel)
        if want is None:
            problems.append(f"{rel}: not listed in its record (adaptvc did not write it)")
            return
        got = hash_regular_at(dir_fd, name)
        if got is None:
            problems.append(f"{rel}: a link or special file, not the file adaptvc wrote")
        elif got != (want.hash, want.size):
            problems.append(f"{rel}: changed since adaptvc wrote it (hash {got[0][:12]}, expected {want.hash[:12]})")

    for name in sorted(os.listdir(fd)):
        if name == RECORD_NAME:
            continue
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                for inner in sorted(os.listdir(sub)):
                    check(sub, inner, f"{name}/{inner}")
            finally:
                os.close(sub)
        else:
            check(fd, name, name)
    problems += [f"{p}: missing" for p in sorted(set(expected) - seen)]
    return problems


def check_folder(root_fd: int, entry: str, where: str = "", final_name: str | None = None) -> FolderCheck:
    """Check the version folder ``entry`` of a serving folder against its own ``adaptvc.json``: the record is
    valid and consistent with the folder's name (``final_name`` when ``entry`` is a temporary name), and every
    file (no more, no fewer) has the recorded hash."""
    label = f"{where}/{entry}" if where else entry
    try:
        fd = os.open(entry, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as e:
        reason = "is a link, not a folder" if e.errno in (errno.ELOOP, errno.ENOTDIR) else (e.strerror or str(e))
        return FolderCheck(entry, None, (reason,))
    try:
        record, problem = _read_record(fd, label)
        if record is None:
            return FolderCheck(entry, None, (problem or "not written by adaptvc",))
        return FolderCheck(entry, record, tuple(record.problems(final_name or entry) + _content_problems(fd, record)))
    finally:
        os.close(fd)


def store_problems(store: ObjectStore, record: ExportRecord) -> list[str] | None:
    """How ``record`` differs from what exporting its commit gives (None when the store lacks the commit)."""
    if not store.has(record.commit):
        return None
    try:
        commit = store.read_commit(record.commit)
        plan = plan_export(store, commit, record.name, record.served_base)
    except AdaptvcError as e:
        return [f"its commit {record.commit[:12]} cannot be exported again: {e}"]
    want = plan.record
    problems = []
    if want.snapshot != record.snapshot:
        problems.append(f"its record names snapshot {record.snapshot[:12]}, commit {record.commit[:12]} has "
                        f"{want.snapshot[:12]}")
    if want.base != record.base:
        problems.append(f"its record's base pin ({record.base.describe()}) is not commit {record.commit[:12]}'s "
                        f"({want.base.describe()})")
    mine = {f.path: f for f in record.files}
    theirs = {f.path: f for f in want.files}
    for path in sorted(set(mine) | set(theirs)):
        if path not in theirs:
            problems.append(f"{path}: listed in its record but not in commit {record.commit[:12]}")
        elif path not in mine:
            problems.append(f"{path}: in commit {record.commit[:12]} but not in its record")
        elif mine[path] != theirs[path]:
            problems.append(f"{path}: its record's hash {mine[path].hash[:12]} is not commit "
                            f"{record.commit[:12]}'s {theirs[path].hash[:12]}")
    if [r.to_dict() | {"path": r.path} for r in want.rewritten] != \
            [r.to_dict() | {"path": r.path} for r in record.rewritten]:
        problems.append("its record of what was rewritten does not match the commit")
    return problems


# -- writing a version folder ------------------------------------------------------------------------------
def _busy(root: Path):
    def raise_busy(info: LockInfo | None) -> None:
        raise FolderBusyError(str(root), info.pid if info else None)
    return raise_busy


@contextlib.contextmanager
def serving_lock(root: Path, timeout: float | None = None) -> Iterator[int]:
    """Hold ``root``'s serving lock (creating ``root`` if needed); yields its descriptor. Temporary entries
    left by a killed adaptvc process are removed once the lock is held."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with held(fd, LOCK_NAME, LOCK_TIMEOUT if timeout is None else timeout, _busy(root)):
            for entry in os.listdir(fd):
                owner = temp_owner(entry)
                if owner is not None and owner != os.getpid() and not pid_alive(owner):
                    with contextlib.suppress(OSError):
                        remove_tree(fd, entry)
            yield fd
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_libc: Any = None


def rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` in ``dir_fd``, failing with FileExistsError if ``dst`` exists (even as an empty
    folder, which a plain rename would silently replace). Uses renameat2(RENAME_NOREPLACE) where the kernel
    and file system have it, else checks first (the caller holds the serving lock)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is not None:
        if fn(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    raise FileExistsError(errno.EEXIST, "File exists", dst)


def _entry_kind(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "folder" if stat.S_ISDIR(st.st_mode) else "file"


def _same_export(a: ExportRecord, b: ExportRecord) -> bool:
    return a.to_dict() == b.to_dict()


def ensure_version(store: ObjectStore, plan: ExportPlan, root: Path, root_fd: int,
                   progress: Progress = SILENT) -> bool:
    """Make ``root/<name>@<version>`` hold exactly this export; True when it was written now, False when it was
    already there and intact. The caller holds :func:`serving_lock`."""
    entry = plan.folder
    where = str(root / entry)
    kind = _entry_kind(root_fd, entry)
    if kind in ("link", "file"):
        raise ExportConflictError(where, f"is a {'symbolic link' if kind == 'link' else 'file'}, not a folder "
                                         "adaptvc wrote")
    if kind == "folder":
        check = check_folder(root_fd, entry, str(root))
        if check.record is None:
            raise ExportConflictError(where, f"exists and was not written by adaptvc ({check.problems[0]})")
        if not _same_export(check.record, plan.record):
            raise ExportConflictError(where, f"holds another export (commit {check.record.commit[:12]}, served base "
                                             f"{check.record.served_base!r})")
        if check.problems:
            raise ExportConflictError(where, f"was changed after adaptvc wrote it ({check.problems[0]}); a folder a "
                                             "server may be reading is never modified")
        return False
    missing = [oid for f in plan.snapshot.files if f.path not in plan.overrides for oid in f.blobs()
               if not store.has(oid)]
    if missing:
        raise ObjectNotFoundError(missing[0])
    tmp = temp_name(entry)
    os.mkdir(tmp, 0o755, dir_fd=root_fd)
    try:
        committed = Snapshot(tuple(f for f in plan.snapshot.files if f.path not in plan.overrides))
        materialise(store, committed, root / tmp, progress, lock=False)
        for path, data in sorted(plan.overrides.items()):
            write_atomic(root / tmp, path, data)
        write_atomic(root / tmp, RECORD_NAME, plan.record_bytes)
        check = check_folder(root_fd, tmp, str(root), entry)  # every byte re-read from disk before it is visible
        if not check.intact:
            raise AdaptvcError(f"the export written to {root / tmp} does not match its record "
                               f"({'; '.join(check.problems[:2])}); nothing was made visible")
        fd = os.open(tmp, _DIR_FLAGS, dir_fd=root_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            rename_noreplace(root_fd, tmp, entry)
        except FileExistsError:
            raise ExportConflictError(where, "appeared while the export was being written") from None
        os.fsync(root_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(root_fd, tmp)
        raise
    return True


def export_to_folder(store: ObjectStore, commit: Commit, dest: str | os.PathLike[str], name: str, *,
                     served_base: str | None = None, force: bool = False, cache_file: Path | None = None,
                     progress: Progress = SILENT) -> ExportResult:
    """Write ``commit`` as ``dest/<name>@<version>/`` (immutable, complete, verified). ``force`` skips the check
    of the adapter against a base model at hand."""
    plan = plan_export(store, commit, name, served_base)
    bases = [] if force else check_base_at_hand(plan.snapshot, commit.base, served_base, cache_file)
    root = Path(dest)
    with serving_lock(root) as fd:
        written = ensure_version(store, plan, root, fd, progress)
    return _result(plan, str(root / plan.folder), written, bases)


def _result(plan: ExportPlan, location: str, written: bool, bases: list[str]) -> ExportResult:
    r = plan.record
    return ExportResult(r.name, r.version, r.commit, location, written, len(r.files) + 1, plan.total_bytes,
                        r.served_base, tuple(x.path for x in r.rewritten), tuple(bases))


# -- a bucket ----------------------------------------------------------------------------------------------
def _file_chunks(store: ObjectStore, entry: FileEntry, hasher: Any) -> Iterator[memoryview]:
    for oid in entry.blobs():
        for chunk in store.iter_chunks(oid, verify=False):
            hasher.update(chunk)
            yield chunk


class _Meter:
    """Bytes of one file reported to the progress: never more than the file's size, whatever the client
    reports (a retried part is sent twice)."""

    def __init__(self, progress: Progress, size: int) -> None:
        self.progress = progress
        self.left = size

    def __call__(self, n: int) -> None:
        n = min(n, self.left)
        if n > 0:
            self.left -= n
            self.progress.update(n)

    def finish(self) -> None:
        self(self.left)


def _object_hash(bucket: Any, key: str) -> tuple[str, int] | None:
    got = bucket.stream(key)
    if got is None:
        return None
    _, chunks = got
    h = new_hasher()
    n = 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def export_to_bucket(store: ObjectStore, commit: Commit, url: str, name: str, *, served_base: str | None = None,
                     force: bool = False, cache_file: Path | None = None,
                     progress: Progress = SILENT) -> ExportResult:
    """Write ``commit`` below ``url`` (``s3://bucket/prefix``) as ``<name>@<version>/…``, the same layout as a
    folder export, with create-only writes and ``adaptvc.json`` last. An object already at a key is accepted
    only when it holds exactly the bytes this export would write; nothing is ever overwritten."""
    from ..remotes.buckets import PreconditionFailed, open_bucket

    plan = plan_export(store, commit, name, served_base)
    bases = [] if force else check_base_at_hand(plan.snapshot, commit.base, served_base, cache_file)
    bucket = open_bucket(url)
    base_url = url.rstrip("/")
    prefix = plan.folder + "/"
    location = f"{base_url}/{plan.folder}"
    try:
        raw = bucket.get(prefix + RECORD_NAME, max_bytes=MAX_RECORD)
        if raw is not None:
            try:
                existing = ExportRecord.from_bytes(raw, f"{location}/{RECORD_NAME}")
            except InvalidRecordError as e:
                raise ExportConflictError(location, f"exists and was not written by adaptvc ({e.reason})") from None
            if not _same_export(existing, plan.record):
                raise ExportConflictError(location, f"holds another export (commit {existing.commit[:12]})")
            for f in plan.record.files:
                if _object_hash(bucket, prefix + f.path) != (f.hash, f.size):
                    raise ExportConflictError(f"{location}/{f.path}", "differs from its record")
            return _result(plan, location, False, bases)
        entries = {f.path: f for f in plan.snapshot.files}
        progress.begin("export", plan.total_bytes)
        try:
            for f in plan.record.files:
                key = prefix + f.path
                meter = _Meter(progress, f.size)
                if f.path in plan.overrides:
                    data: Any = plan.overrides[f.path]
                    hasher = None
                else:
                    hasher = new_hasher()
                    data = io.BufferedReader(ChunkReader(_file_chunks(store, entries[f.path], hasher)), 1 << 20)
                try:
                    bucket.put(key, data, f.size, if_none_match=True, progress=meter)
                except PreconditionFailed:
                    if _object_hash(bucket, key) != (f.hash, f.size):
                        raise ExportConflictError(f"{location}/{f.path}", "exists with other bytes") from None
                    meter.finish()
                    continue
                meter.finish()
                if hasher is not None and hasher.hexdigest() != f.hash:
                    bucket.delete(key)  # created just now, by us: a corrupt store never leaves a file behind
                    raise ChecksumMismatchError(f"{f.path} read from the store", f.hash, hasher.hexdigest())
                head = bucket.head(key)
                if head is None or head[0] != f.size:
                    raise AdaptvcError(f"{location}/{f.path} does not hold {f.size} bytes after its upload; the "
                                       "export has no record and is not complete: run it again")
            record = plan.record_bytes
            try:
                bucket.put(prefix + RECORD_NAME, record, len(record), if_none_match=True)
            except PreconditionFailed:
                if bucket.get(prefix + RECORD_NAME, max_bytes=MAX_RECORD) != record:
                    raise ExportConflictError(f"{location}/{RECORD_NAME}", "was written by someone else meanwhile") \
                        from None
            progress.update(len(record))
        finally:
            progress.end()
    finally:
        bucket.close()
    return _result(plan, location, True, bases)


def is_bucket_url(dest: str) -> bool:
    """Whether an export destination names a bucket (``s3://…``, ``az://…``) rather than a folder."""
    return scheme_of(dest) is not None
