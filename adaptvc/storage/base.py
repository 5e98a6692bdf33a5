"""The storage interfaces: an object store and a set of refs, each with a disk and an in-memory implementation.

Operations, remotes and the repository talk to these classes only; a new backend (packs, object storage, an
in-memory store for fast tests) implements them and runs the same contract tests (``tests/test_storage.py``).

Object store: immutable objects keyed by the xxh3-128 of their (uncompressed) bytes, re-hashed on read,
written in batches made durable by :meth:`ObjectStore.flush`. A writer first *opens a session* (any put or
freshen does it) and ends it once a ref names what it wrote: gc never removes an object a live session may
still point at (see ``ops/gc.py``).

Refs: ``HEAD``, ``refs/heads/*``, ``refs/tags/*``, ``refs/remotes/*/*``, moved only by compare-and-swap
(:meth:`Refs.set_if_equals`), every move appended to a reflog.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from ..hashing import hash_bytes, new_hasher
from ..objects import Commit, Snapshot, decode_json_object

#: Snapshots and commits are small JSON documents; anything bigger is not one.
MAX_METADATA_OBJECT = 64 << 20


def commit_from_bytes(data: bytes, oid: str) -> Commit:
    """A commit from bytes already checked to hash to ``oid``."""
    commit = Commit.from_dict(decode_json_object(data, oid), oid)
    commit.__dict__["id"] = oid  # the id is the hash of the stored bytes, already checked
    return commit


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (to stream one store's object into another)."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks)).cast("B")
            except StopIteration:
                return 0
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class ObjectStore(ABC):
    """Content-addressed, immutable objects. Every read is checked against the id."""

    #: where the store is, for messages
    location: str = "?"

    # -- the contract -----------------------------------------------------------------------------------
    @abstractmethod
    def has(self, oid: str) -> bool: ...

    @abstractmethod
    def freshen(self, oid: str) -> bool:
        """If the object exists, mark it as just used (gc's grace period then protects it) and return True."""

    @abstractmethod
    def size(self, oid: str) -> int:
        """The object's (uncompressed) size; ObjectNotFoundError when absent."""

    @abstractmethod
    def iter_chunks(self, oid: str, verify: bool = True, buffer: memoryview | None = None) -> Iterator[memoryview]:
        """The object's bytes in order, in bounded blocks (each valid until the next is requested; read into
        ``buffer`` when given, so two objects can be streamed side by side). With ``verify``,
        ChecksumMismatchError after the last block if they do not hash to ``oid``."""

    @abstractmethod
    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        """Store bytes whose id the caller has just computed from these very bytes; True when new."""

    @abstractmethod
    def put_stream(self, f: BinaryIO, size: int) -> str:
        """Store ``size`` bytes read from ``f``; returns their id."""

    @abstractmethod
    def flush(self) -> None:
        """Make every object written since the last flush durable."""

    @abstractmethod
    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Object ids in the store (only those starting with ``prefix`` when given)."""

    # -- gc's side of the contract ------------------------------------------------------------------------
    @abstractmethod
    def clock(self) -> float:
        """Now, on the clock the store stamps objects with (a file system's, for a disk store)."""

    @abstractmethod
    def writers_since(self) -> float | None:
        """When the oldest live write session began (None: no writer is active)."""

    @abstractmethod
    def end_session(self) -> None:
        """This process's writer is done: what it wrote is named by a ref now (or was abandoned)."""

    @abstractmethod
    def prune(self, oid: str, cutoff: float, dry_run: bool = False) -> int | None:
        """Remove the object if it was last written or freshened before ``cutoff``; the bytes freed, or None
        when it was kept. A freshen racing with the removal wins."""

    def prune_temporary(self, cutoff: float, dry_run: bool = False) -> int:
        """Remove temporary files and folders older than ``cutoff``; how many."""
        return 0

    def temporary_count(self) -> int:
        return 0

    # -- optional capabilities ----------------------------------------------------------------------------
    def is_compressed(self, oid: str) -> bool:
        return False

    def decompressed(self, oid: str, expected_size: int) -> bytes:
        """The bytes of a compressed object of ``expected_size`` bytes (not re-hashed)."""
        return self.read(oid)

    def compress_object(self, oid: str, dtype: str | None = None) -> int:
        """Store the object compressed when that pays; the bytes saved."""
        return 0

    def close(self) -> None:
        self.end_session()

    # -- built on the contract ----------------------------------------------------------------------------
    def read(self, oid: str, max_size: int | None = None, buffer: memoryview | None = None) -> bytes:
        """The object's bytes, after checking they still hash to ``oid`` (read through ``buffer`` when given:
        threads reading at once each pass their own)."""
        size = self.size(oid)
        if max_size is not None and size > max_size:
            raise CorruptObjectError(oid, f"larger than {max_size} bytes")
        out = bytearray()
        for chunk in self.iter_chunks(oid, verify=False, buffer=buffer):
            out += chunk
            if len(out) > size:
                raise CorruptObjectError(oid, f"holds more than its {size} bytes")
        data = bytes(out)
        got = hash_bytes(data)
        if got != oid:
            raise ChecksumMismatchError(f"object {oid}", oid, got)
        return data

    def reader(self, oid: str, verify: bool = False) -> BinaryIO:
        """The object as a read-only file (for streaming it elsewhere)."""
        own = memoryview(bytearray(1 << 20))  # its own buffer: several readers may stream at once (threads)
        return io.BufferedReader(ChunkReader(self.iter_chunks(oid, verify=verify, buffer=own)), 1 << 20)

    def put_bytes(self, data: bytes) -> str:
        oid = hash_bytes(data)
        self.put_known(oid, data)
        return oid

    def put_snapshot(self, snap: Snapshot) -> str:
        self.put_known(snap.id, snap.encode())
        return snap.id

    def put_commit(self, commit: Commit) -> str:
        self.put_known(commit.id, commit.encode())
        return commit.id

    def read_commit(self, oid: str) -> Commit:
        return commit_from_bytes(self.read(oid, MAX_METADATA_OBJECT), oid)

    def read_snapshot(self, oid: str) -> Snapshot:
        snap = Snapshot.from_dict(decode_json_object(self.read(oid, MAX_METADATA_OBJECT), oid), oid)
        snap.__dict__["id"] = oid
        return snap

    def is_commit(self, oid: str) -> bool:
        """True when ``oid`` names a readable commit (cheap for the large blobs that are not)."""
        try:
            if self.size(oid) > MAX_METADATA_OBJECT:
                return False
            first = next(iter(self.iter_chunks(oid, verify=False)), b"")
            if bytes(first[:1]) != b"{":
                return False
            self.read_commit(oid)
        except (CorruptObjectError, ObjectNotFoundError, ChecksumMismatchError, OSError):
            return False
        return True

    def copy_from(self, src: ObjectStore, oid: str) -> int:
        """Copy one object from ``src``, re-hashing it on the way; the bytes copied (0 when already here)."""
        if self.freshen(oid):
            return 0
        size = src.size(oid)
        h = new_hasher()

        def hashed() -> Iterator[memoryview]:
            for chunk in src.iter_chunks(oid, verify=False):
                h.update(chunk)
                yield chunk

        got = self.put_stream(io.BufferedReader(ChunkReader(hashed()), 1 << 20), size)
        if got != oid or h.hexdigest() != oid:
            raise ChecksumMismatchError(f"object {oid} from {src.location}", oid, got)
        return size


@dataclass(frozen=True)
class ReflogEntry:
    ref: str
    old: str | None
    new: str | None
    time: float
    message: str

    def to_json(self) -> dict[str, object]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "time": self.time, "message": self.message}


@dataclass(frozen=True)
class BadRef:
    """A ref that cannot be read (garbage, a link, a folder): reported by fsck, skipped by everything else."""

    ref: str
    problem: str


class Refs(ABC):
    """Branches, tags, remote-tracking branches and HEAD."""

    location: str = "?"

    @abstractmethod
    def read(self, ref: str) -> str | None:
        """The commit id ``ref`` names, or None when it does not exist; CorruptObjectError when unreadable."""

    @abstractmethod
    def list(self, prefix: str) -> dict[str, str]:
        """``{short name: commit id}`` for every readable ref below ``prefix``; unreadable ones are skipped
        (see :meth:`bad_refs`)."""

    @abstractmethod
    def bad_refs(self) -> list[BadRef]: ...

    @abstractmethod
    def set_if_equals(self, ref: str, old: str | None, new: str | None, message: str = "") -> None:
        """Move ``ref`` from ``old`` to ``new`` (None: absent), or raise RefMovedError. The only way a branch
        or tag moves; ``new=None`` deletes it."""

    @abstractmethod
    def head_raw(self) -> str | None:
        """HEAD's text (``ref: refs/heads/x`` or a commit id), or None when HEAD is missing."""

    @abstractmethod
    def set_head(self, target: str, message: str = "", expected: str | None = None) -> None:
        """Point HEAD at a branch (``refs/heads/x``) or, detached, at a commit id; with ``expected``, HEAD must be
        detached at that commit (compare-and-swap)."""

    @abstractmethod
    def init_head(self, branch_ref: str) -> None: ...

    @abstractmethod
    def reflog(self, ref: str) -> list[ReflogEntry]:
        """Moves of ``ref``, newest first (unreadable lines are skipped)."""

    @abstractmethod
    def reflog_refs(self) -> list[str]:
        """Every ref that has a reflog, deleted refs included."""

    @abstractmethod
    def delete_reflog(self, ref: str) -> None: ...

    def locks(self) -> list:
        return []

    def clear_stale_locks(self, force: bool = False) -> list:
        return []

    # -- built on the contract ----------------------------------------------------------------------------
    def head_target(self) -> str | None:
        """The ref HEAD points at (``refs/heads/main``), or None when HEAD is detached."""
        from ..hashing import is_object_id
        from ..refnames import HEADS, check_full_ref

        text = self.head_raw()
        if text is None:
            raise CorruptObjectError("HEAD", "missing")
        if text.startswith("ref: "):
            target = text[5:].strip()
            if not target.startswith(HEADS):
                raise CorruptObjectError("HEAD", f"points outside refs/heads/: {target}")
            try:
                check_full_ref(target)
            except Exception:
                raise CorruptObjectError("HEAD", f"points at an invalid ref: {target}") from None
            return target
        if not is_object_id(text):
            raise CorruptObjectError("HEAD", "holds neither a ref nor a commit id")
        return None

    def head_commit(self) -> str | None:
        target = self.head_target()
        if target is not None:
            return self.read(target)
        return self.head_raw()

    def rewrite_reflog(self, ref: str, entries: list[ReflogEntry], expected: list[ReflogEntry] | None = None,
                       ) -> None:
        """Replace the reflog of ``ref`` with ``entries`` (newest first, as :meth:`reflog` returns them; an
        empty list removes the log) in one step, under the ref's lock (what ``reflog expire`` does). With
        ``expected``, the log must still hold exactly those entries, else RefMovedError (a move was logged
        meanwhile: read it again)."""
        raise NotImplementedError(f"{type(self).__name__} cannot rewrite a reflog")
