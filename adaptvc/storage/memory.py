"""The storage interfaces in memory: for fast tests, and for operations that need a scratch store.

Same contract as the disk implementations (``tests/test_storage.py`` runs both): objects are re-hashed on
read, refs move only by compare-and-swap, every move is logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import ChecksumMismatchError, ObjectNotFoundError, RefMovedError
from ..hashing import BLOCK_SIZE, hash_bytes, is_object_id, new_hasher
from ..refnames import PREFIXES, check_full_ref
from .base import BadRef, ObjectStore, ReflogEntry, Refs


class MemoryObjectStore(ObjectStore):
    def __init__(self) -> None:
        self.location = "memory"
        self.objects: dict[str, bytes] = {}
        self.stamps: dict[str, float] = {}
        self._sessions: dict[int, float] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return time.time()

    def has(self, oid: str) -> bool:
        return oid in self.objects

    def freshen(self, oid: str) -> bool:
        self._begin()
        with self._lock:
            if oid not in self.objects:
                return False
            self.stamps[oid] = self._now()
            return True

    def size(self, oid: str) -> int:
        try:
            return len(self.objects[oid])
        except KeyError:
            raise ObjectNotFoundError(oid) from None

    def iter_chunks(self, oid: str, verify: bool = True, buffer: memoryview | None = None) -> Iterator[memoryview]:
        try:
            data = memoryview(self.objects[oid])
        except KeyError:
            raise ObjectNotFoundError(oid) from None
        h = new_hasher() if verify else None
        for start in range(0, len(data), BLOCK_SIZE):
            chunk = data[start:start + BLOCK_SIZE]
            if h is not None:
                h.update(chunk)
            yield chunk
        if h is not None and h.hexdigest() != oid:
            raise ChecksumMismatchError(f"object {oid}", oid, h.hexdigest())

    def _begin(self) -> None:
        self._sessions.setdefault(threading.get_ident(), self._now())

    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        if not is_object_id(oid):
            raise ValueError(f"not an object id: {oid}")
        if self.freshen(oid):
            return False
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = [chunks]
        with self._lock:
            self.objects[oid] = b"".join(bytes(c) for c in chunks)
            self.stamps[oid] = self._now()
        return True

    def put_stream(self, f: BinaryIO, size: int) -> str:
        data = bytearray()
        while len(data) < size:
            chunk = f.read(min(BLOCK_SIZE, size - len(data)))
            if not chunk:
                raise EOFError("file ended early")
            data += chunk
        oid = hash_bytes(data)
        self.put_known(oid, bytes(data))
        return oid

    def flush(self) -> None:
        pass

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        yield from sorted(oid for oid in list(self.objects) if oid.startswith(prefix))

    def clock(self) -> float:
        return self._now()

    def writers_since(self) -> float | None:
        others = [t for tid, t in self._sessions.items() if tid != threading.get_ident()]
        return min(others) if others else None

    def end_session(self) -> None:
        self._sessions.pop(threading.get_ident(), None)

    def prune(self, oid: str, cutoff: float, dry_run: bool = False) -> int | None:
        with self._lock:
            if oid not in self.objects or self.stamps.get(oid, 0.0) >= cutoff:
                return None
            size = len(self.objects[oid])
            if not dry_run:
                del self.objects[oid]
                self.stamps.pop(oid, None)
            return size


class MemoryRefs(Refs):
    def __init__(self) -> None:
        self.location = "memory"
        self.refs: dict[str, str] = {}
        self.head: str | None = None
        self.logs: dict[str, list[ReflogEntry]] = {}
        self._lock = threading.Lock()

    def read(self, ref: str) -> str | None:
        check_full_ref(ref)
        return self.refs.get(ref)

    def list(self, prefix: str) -> dict[str, str]:
        return dict(sorted((r[len(prefix):], oid) for r, oid in self.refs.items() if r.startswith(prefix)))

    def bad_refs(self) -> list[BadRef]:
        return []

    def _log(self, ref: str, old: str | None, new: str | None, message: str) -> None:
        self.logs.setdefault(ref, []).append(ReflogEntry(ref, old, new, round(time.time(), 3), message))

    def set_if_equals(self, ref: str, old: str | None, new: str | None, message: str = "") -> None:
        if new is not None and not is_object_id(new):
            raise ValueError(f"not a commit id: {new}")
        check_full_ref(ref)
        if ref == "HEAD" or not ref.startswith(PREFIXES):
            raise ValueError("use set_head for HEAD")
        with self._lock:
            current = self.refs.get(ref)
            if current != old:
                raise RefMovedError(ref, old, current)
            if new is None:
                del self.refs[ref]
            else:
                self.refs[ref] = new
            self._log(ref, old, new, message)

    def head_raw(self) -> str | None:
        return self.head

    def set_head(self, target: str, message: str = "", expected: str | None = None) -> None:
        if target.startswith("refs/heads/"):
            check_full_ref(target)
            text = f"ref: {target}"
        elif is_object_id(target):
            text = target
        else:
            raise ValueError(f"HEAD can point at a branch or a commit id, not {target!r}")
        with self._lock:
            old = self.head_commit() if self.head is not None else None
            if expected is not None and (self.head_target() is not None or old != expected):
                raise RefMovedError("HEAD", expected, old)
            self.head = text
            self._log("HEAD", old, self.head_commit(), message)

    def init_head(self, branch_ref: str) -> None:
        check_full_ref(branch_ref)
        self.head = f"ref: {branch_ref}"

    def reflog(self, ref: str) -> list[ReflogEntry]:
        return list(reversed(self.logs.get(ref, [])))

    def reflog_refs(self) -> list[str]:
        return sorted(self.logs)

    def delete_reflog(self, ref: str) -> None:
        self.logs.pop(ref, None)

    def rewrite_reflog(self, ref: str, entries: list[ReflogEntry], expected: list[ReflogEntry] | None = None,
                       ) -> None:
        check_full_ref(ref)
        with self._lock:
            if expected is not None and list(reversed(self.logs.get(ref, []))) != expected:
                raise _reflog_moved(ref)
            if entries:
                self.logs[ref] = list(reversed(entries))
            else:
                self.logs.pop(ref, None)


def _reflog_moved(ref: str) -> RefMovedError:
    err = RefMovedError(ref, None, None)
    err.args = (f"the reflog of {ref} changed while it was being rewritten; nothing was lost: run the command "
                "again",)
    return err
