"""The content-addressed object store: ``objects/ab/cdef…``, immutable, written atomically, re-hashed on read.

Writes are batched for durability: ``put_*`` renames each object into place at once (a crash never leaves
a partial object under its final name) and :meth:`ObjectStore.flush` fsyncs everything written since the
last flush. Callers flush before they write anything that points at the new objects, so on disk objects
always exist before the commit that names them, and the commit before the ref.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .atomic import fsync_dir
from .compression import compress, decompress, raw_size
from .errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from .hashing import BLOCK_SIZE, hash_bytes, is_object_id, new_hasher
from .objects import Commit, Snapshot, decode_json_object

#: Snapshots and commits are small JSON documents; anything bigger is not one.
MAX_METADATA_OBJECT = 64 << 20


class ObjectStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self._unsynced_files: list[Path] = []
        self._buffer: memoryview | None = None
        self._unsynced_dirs: set[Path] = set()

    # -- layout ---------------------------------------------------------------------------------------------
    def path(self, oid: str) -> Path:
        if not is_object_id(oid):
            raise CorruptObjectError(oid, "not an object id")
        return self.objects_dir / oid[:2] / oid[2:]

    def zpath(self, oid: str) -> Path:
        """Where the compressed form of an object lives (``adaptvc gc --aggressive`` writes it)."""
        p = self.path(oid)
        return p.with_name(p.name + ".z")

    def files(self, oid: str) -> list[Path]:
        """The files that hold an object (raw, compressed, or for a moment during a repack both)."""
        return [p for p in (self.path(oid), self.zpath(oid)) if p.is_file() or p.is_symlink()]

    def has(self, oid: str) -> bool:
        return self.path(oid).is_file() or self.zpath(oid).is_file()

    def freshen(self, oid: str) -> bool:
        """If the object exists, touch its mtime and return True. A writer that reuses an existing object
        freshens it, so that gc's grace period protects it exactly like a newly written one."""
        for p in (self.path(oid), self.zpath(oid)):
            try:
                os.utime(p, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except PermissionError:  # a read-only store (someone else's): reading still works
                return self.has(oid)
            return True
        return False

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Object ids in the store, optionally only those starting with ``prefix`` (hex)."""
        dirs = [prefix[:2]] if len(prefix) >= 2 else None
        try:
            names = dirs if dirs is not None else sorted(os.listdir(self.objects_dir))
        except FileNotFoundError:
            return
        for d in names:
            if len(d) != 2 or (prefix and not d.startswith(prefix[:2])):
                continue
            try:
                entries = os.listdir(self.objects_dir / d)
            except FileNotFoundError:
                continue
            for name in sorted({n.removesuffix(".z") for n in entries}):
                oid = d + name
                if is_object_id(oid) and oid.startswith(prefix):
                    yield oid

    # -- writing --------------------------------------------------------------------------------------------
    def _open_temp(self) -> tuple[int, Path]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"obj.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), tmp

    def _install(self, tmp: Path, oid: str) -> None:
        final = self.path(oid)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        self._unsynced_files.append(final)
        self._unsynced_dirs.add(final.parent)

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A new temporary file in the store's file system; removed if the block fails before renaming it."""
        fd, tmp = self._open_temp()
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, tmp
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        """Store bytes whose id the caller has just computed from these very bytes. Returns True when the
        object was new. Storing an object that exists is a no-op."""
        if self.freshen(oid):
            return False
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        with self._temp_file() as (f, tmp):
            for c in chunks:
                f.write(c)
            f.flush()
            self._install(tmp, oid)
        return True

    def put_bytes(self, data: bytes) -> str:
        oid = hash_bytes(data)
        self.put_known(oid, data)
        return oid

    def put_stream(self, f: BinaryIO, size: int) -> str:
        """Store ``size`` bytes read from ``f`` (for data too large to hold in memory at once)."""
        h = new_hasher()
        with self._temp_file() as (out, tmp):
            remaining = size
            while remaining:
                chunk = f.read(min(BLOCK_SIZE, remaining))
                if not chunk:
                    raise EOFError("file ended early")
                h.update(chunk)
                out.write(chunk)
                remaining -= len(chunk)
            out.flush()
            oid = h.hexdigest()
            if self.freshen(oid):
                os.unlink(tmp)
            else:
                self._install(tmp, oid)
        return oid

    def put_snapshot(self, snap: Snapshot) -> str:
        self.put_known(snap.id, snap.encode())
        return snap.id

    def put_commit(self, commit: Commit) -> str:
        self.put_known(commit.id, commit.encode())
        return commit.id

    def flush(self) -> None:
        """Make every object written since the last flush durable."""
        for p in self._unsynced_files:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for d in self._unsynced_dirs:
            fsync_dir(d)
        if self._unsynced_dirs:
            fsync_dir(self.objects_dir)
        self._unsynced_files.clear()
        self._unsynced_dirs.clear()

    # -- reading --------------------------------------------------------------------------------------------
    def open(self, oid: str) -> BinaryIO:
        """The object's file, opened for reading (not verified: use :meth:`read` or :meth:`iter_chunks`, or
        hash what you read)."""
        return self._open(oid)

    def _open_file(self, path: Path, oid: str) -> BinaryIO:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CorruptObjectError(oid, "the object file is a symbolic link") from None
            raise
        return os.fdopen(fd, "rb")

    def _open(self, oid: str) -> BinaryIO:
        try:
            return self._open_file(self.path(oid), oid)
        except FileNotFoundError:
            pass
        try:
            with self._open_file(self.zpath(oid), oid) as f:
                return io.BytesIO(decompress(f.read(), oid))
        except FileNotFoundError:
            raise ObjectNotFoundError(oid) from None

    def is_compressed(self, oid: str) -> bool:
        return not self.path(oid).is_file() and self.zpath(oid).is_file()

    def decompressed(self, oid: str) -> bytes:
        """The bytes of a compressed object (not re-hashed: for callers that hash them anyway)."""
        with self._open_file(self.zpath(oid), oid) as f:
            return decompress(f.read(), oid)

    def size(self, oid: str) -> int:
        """The object's size (uncompressed)."""
        try:
            return os.stat(self.path(oid), follow_symlinks=False).st_size
        except FileNotFoundError:
            pass
        try:
            with self._open_file(self.zpath(oid), oid) as f:
                return raw_size(f.read(13))
        except FileNotFoundError:
            raise ObjectNotFoundError(oid) from None

    def read(self, oid: str, max_size: int | None = None) -> bytes:
        """The object's bytes, after checking they still hash to ``oid``."""
        with self._open(oid) as f:
            data = f.read() if max_size is None else f.read(max_size + 1)
        if max_size is not None and len(data) > max_size:
            raise CorruptObjectError(oid, f"larger than {max_size} bytes")
        got = hash_bytes(data)
        if got != oid:
            raise ChecksumMismatchError(f"object {oid}", oid, got)
        return data

    def compress_object(self, oid: str, dtype: str | None = None) -> int:
        """Replace a raw object by its compressed form when that pays; returns the bytes saved. The
        compressed copy is verified before the raw file goes, so a crash leaves one good copy or both."""
        raw = self.path(oid)
        if not raw.is_file():
            return 0
        data = self.read(oid)
        container = compress(data, dtype)
        if container is None or hash_bytes(decompress(container, oid)) != oid:
            return 0
        with self._temp_file() as (f, tmp):
            f.write(container)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, self.zpath(oid))
        raw.unlink()
        return len(data) - len(container)

    def iter_chunks(self, oid: str, verify: bool = True) -> Iterator[memoryview]:
        """Stream the object in large blocks (views of one buffer, valid until the next block).

        With ``verify`` (the default), raises ChecksumMismatchError after the last block if the bytes do not
        hash to ``oid``: the caller must not treat its output as good before the iterator ends. A caller that
        checks a larger hash covering these bytes anyway (checkout's whole-file hash) may pass False."""
        h = new_hasher() if verify else None
        if self._buffer is None:  # one buffer for the store's life: no fresh memory per object
            self._buffer = memoryview(bytearray(BLOCK_SIZE))
        view = self._buffer
        with self._open(oid) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                if h is not None:
                    h.update(view[:n])
                yield view[:n]
        if h is not None:
            got = h.hexdigest()
            if got != oid:
                raise ChecksumMismatchError(f"object {oid}", oid, got)

    def read_commit(self, oid: str) -> Commit:
        commit = Commit.from_dict(decode_json_object(self.read(oid, MAX_METADATA_OBJECT), oid), oid)
        commit.__dict__["id"] = oid  # the id is the hash of the stored bytes, already checked
        return commit

    def read_snapshot(self, oid: str) -> Snapshot:
        snap = Snapshot.from_dict(decode_json_object(self.read(oid, MAX_METADATA_OBJECT), oid), oid)
        snap.__dict__["id"] = oid
        return snap

    def is_commit(self, oid: str) -> bool:
        """True when ``oid`` names a readable commit (cheap for the large blobs that are not)."""
        try:
            if self.size(oid) > MAX_METADATA_OBJECT:
                return False
            with self._open(oid) as f:
                if f.read(1) != b"{":
                    return False
            self.read_commit(oid)
        except (CorruptObjectError, ObjectNotFoundError, ChecksumMismatchError):
            return False
        return True
