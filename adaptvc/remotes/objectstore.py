"""A bare adaptvc store in an object-storage bucket (``s3://bucket/prefix``, ``az://container/prefix``).

The layout is the folder remote's, as keys below the prefix::

    config.json                {"format": 1, "hash": "xxh3-128", "bare": true}
    HEAD                       ref: refs/heads/main
    objects/ab/cdef...         every object, raw, under its id: immutable
    refs/heads/<branch>        one commit id
    refs/tags/<tag>            one commit id

Guarantees (``docs/remotes-object-storage.md``):

* objects are written create-only (``If-None-Match: *``) after being re-hashed on the way out, and re-hashed
  on the way in; a snapshot is decoded (which applies the adapter path rule) before anything is stored
  locally;
* a ref moves only by a conditional write against the version that was read (``If-Match`` on its ETag, or
  ``If-None-Match: *`` to create it): of two concurrent pushes one lands and the other is told to pull; a
  service that ignores those conditions is detected (a probe before the first write) and refused for push;
* a push writes blobs, then snapshots, then commits parents first, then refs: a push killed at any point
  leaves every ref naming a whole history, and the next push sends only what is still missing;
* transfers run in parallel (``ADAPTVC_TRANSFER_WORKERS``, default 8), large objects in parts, and progress is
  reported in bytes against the real total.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, TypeVar

from ..errors import AdaptvcError, ChecksumMismatchError, CorruptObjectError, InvalidRefNameError, ObjectNotFoundError
from ..hashing import HASH_NAME, hash_bytes, is_object_id, new_hasher
from ..objects import FORMAT_VERSION, Snapshot
from ..ops.graph import parents_first
from ..ops.remote_fsck import RemoteFsckReport, fsck_remote_store
from ..parsing import JsonError, parse_json
from ..progress import SILENT, Progress
from ..refnames import HEADS, TAGS, check_full_ref, check_ref_name
from ..storage.base import MAX_METADATA_OBJECT, ChunkReader, ObjectStore
from .base import NonFastForwardError, RefUpdate, Remote, RemoteError
from .buckets import (
    PART_SIZE,
    Bucket,
    ConditionalWritesUnsupported,
    PreconditionFailed,
    check_bucket_url,
    open_bucket,
    read_exactly,
    transfer_workers,
)

CONFIG = "config.json"
HEAD = "HEAD"
#: a ref holds one id; HEAD one line; config.json a few fields
MAX_REF_OBJECT = 4096
MAX_CONFIG = 1 << 20
#: verified commits and snapshots kept in memory after a read (a fetch reads each once)
CACHE_BUDGET = 256 << 20
#: an ETag no object has, for the probe of If-Match
_NO_SUCH_ETAG = '"00000000000000000000000000000000"'

T = TypeVar("T")


def object_key(oid: str) -> str:
    if not is_object_id(oid):
        raise CorruptObjectError(oid, "not an object id")
    return f"objects/{oid[:2]}/{oid[2:]}"


def blob_sizes(snapshot: Snapshot) -> dict[str, int]:
    """``{blob id: size}`` of every blob a snapshot names, as the snapshot declares them."""
    out: dict[str, int] = {}
    for f in snapshot.files:
        if f.layout is None:
            out[f.hash] = f.size
        else:
            out[f.layout.header] = f.layout.header_size
            for t in f.layout.tensors:
                out[t.blob] = t.size
    return out


class BucketObjectStore(ObjectStore):
    """The objects of a bucket remote, through the :class:`ObjectStore` interface: every read is re-hashed,
    every write is create-only. Commits and snapshots read once are kept (verified) for the next read."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.location = bucket.url
        self._cache: dict[str, bytes] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def cached(self, oid: str) -> bytes | None:
        return self._cache.get(oid)

    def _remember(self, oid: str, data: bytes) -> None:
        with self._lock:
            if oid not in self._cache and self._cached_bytes + len(data) <= CACHE_BUDGET:
                self._cache[oid] = data
                self._cached_bytes += len(data)

    # -- the contract -----------------------------------------------------------------------------------
    def has(self, oid: str) -> bool:
        return oid in self._cache or self.bucket.head(object_key(oid)) is not None

    def freshen(self, oid: str) -> bool:
        return self.has(oid)  # a bucket keeps no access times; nothing to protect from a remote gc

    def size(self, oid: str) -> int:
        if oid in self._cache:
            return len(self._cache[oid])
        head = self.bucket.head(object_key(oid))
        if head is None:
            raise ObjectNotFoundError(oid)
        return head[0]

    def iter_chunks(self, oid: str, verify: bool = True, buffer: memoryview | None = None) -> Iterator[memoryview]:
        data = self._cache.get(oid)
        if data is not None:
            yield memoryview(data)
            return
        got = self.bucket.stream(object_key(oid))
        if got is None:
            raise ObjectNotFoundError(oid)
        _, chunks = got
        h = new_hasher() if verify else None
        for chunk in chunks:
            if h is not None:
                h.update(chunk)
            yield memoryview(chunk)
        if h is not None and h.hexdigest() != oid:
            raise ChecksumMismatchError(f"object {oid} on {self.location}", oid, h.hexdigest())

    def read(self, oid: str, max_size: int | None = None, buffer: memoryview | None = None) -> bytes:
        data = self._cache.get(oid)
        if data is None:
            got = self.bucket.read(object_key(oid), MAX_METADATA_OBJECT if max_size is None else max_size)
            if got is None:
                raise ObjectNotFoundError(oid)
            data = got[0]
            digest = hash_bytes(data)
            if digest != oid:
                raise ChecksumMismatchError(f"object {oid} on {self.location}", oid, digest)
            self._remember(oid, data)
        if max_size is not None and len(data) > max_size:
            raise CorruptObjectError(oid, f"larger than {max_size} bytes")
        return data

    def put_known(self, oid: str, chunks: list[bytes | memoryview] | bytes | memoryview) -> bool:
        data = bytes(chunks) if isinstance(chunks, (bytes, bytearray, memoryview)) else b"".join(map(bytes, chunks))
        try:
            self.bucket.put(object_key(oid), data, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    def put_stream(self, f: BinaryIO, size: int) -> str:
        data = read_exactly(f, size)
        oid = hash_bytes(data)
        self.put_known(oid, data)
        return oid

    def flush(self) -> None:
        pass  # a bucket's write is durable when it is acknowledged

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        start = f"objects/{prefix[:2]}/{prefix[2:]}" if len(prefix) >= 2 else f"objects/{prefix}"
        for key in self.bucket.list(start):
            parts = key.split("/")
            if len(parts) == 3 and is_object_id(parts[1] + parts[2]) and len(parts[1]) == 2:
                yield parts[1] + parts[2]

    def clock(self) -> float:
        return time.time()

    def writers_since(self) -> float | None:
        return None

    def end_session(self) -> None:
        pass

    def prune(self, oid: str, cutoff: float, dry_run: bool = False) -> int | None:
        return None  # objects in a bucket are never removed by adaptvc (other pushers may be using them)


class _VerifyingReader(io.RawIOBase):
    """A local object as it is read for upload: after its last byte, ChecksumMismatchError unless the bytes hash
    to ``oid`` (the bucket then abandons the upload, so a corrupt local object never reaches the remote)."""

    def __init__(self, raw: BinaryIO, oid: str, size: int) -> None:
        self.raw = raw
        self.oid = oid
        self.remaining = size
        self.h = new_hasher()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.remaining == 0:
            return 0
        view = memoryview(b).cast("B")[:self.remaining]
        data = self.raw.read(len(view))
        if not data:
            raise CorruptObjectError(self.oid, f"the local object ended {self.remaining} bytes early")
        n = len(data)
        view[:n] = data
        self.h.update(data)
        self.remaining -= n
        if self.remaining == 0 and self.h.hexdigest() != self.oid:
            raise ChecksumMismatchError(f"local object {self.oid}", self.oid, self.h.hexdigest())
        return n


class _Transfers:
    """A bounded pool of worker threads; the first failure cancels what has not started and is raised."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, fn: Callable[[T], int], items: Iterable[T]) -> int:
        items = list(items)
        if not items:
            return 0
        if self.workers == 1 or len(items) == 1:
            return sum(fn(i) for i in items)
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(items)), thread_name_prefix="adaptvc-xfer")
        try:
            futures: list[Future[int]] = [pool.submit(fn, i) for i in items]
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:  # a failure or an interrupt: what has not started never starts; what runs ends first
            pool.shutdown(wait=True, cancel_futures=True)
        for f in futures:  # every started transfer has ended here
            if not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        return sum(f.result() for f in futures)


class ObjectStoreRemote(Remote):
    """An adaptvc remote in an S3 bucket or an Azure container (see the module docstring)."""

    def __init__(self, url: str, name: str = "origin", local: ObjectStore | None = None) -> None:
        check_bucket_url(url)  # the client (and its credentials) only when the remote is used: see .bucket
        self.url = url
        self.name = name
        self.workers = transfer_workers()
        self.skipped_refs = []
        self._conditional_writes_checked = False
        self._checked = False
        self._local_lock = threading.Lock()

    @functools.cached_property
    def bucket(self) -> Bucket:
        """The bucket, with a client of the service (made on first use: ``remote add`` needs no credentials)."""
        return open_bucket(self.url)

    @functools.cached_property
    def store(self) -> BucketObjectStore:
        return BucketObjectStore(self.bucket)

    # -- the store itself ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.bucket.head(CONFIG) is not None

    def _check(self) -> None:
        if self._checked:
            return
        got = self.bucket.read(CONFIG, MAX_CONFIG) if self.bucket.exists() else None
        if got is None:
            raise RemoteError(f"no adaptvc store at {self.url}; 'adaptvc push' creates it")
        try:
            config = parse_json(got[0], MAX_CONFIG)
        except JsonError:
            config = None
        if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION:
            raise RemoteError(f"{self.url} is not an adaptvc store of format {FORMAT_VERSION}")
        if config.get("hash", HASH_NAME) != HASH_NAME:
            raise RemoteError(f"{self.url} uses hash {str(config.get('hash'))[:40]!r}, not {HASH_NAME}")
        self._checked = True  # a store's format never changes under an open remote

    def create(self, private: bool = False) -> None:
        """Write ``config.json`` and ``HEAD`` (create-only: a store someone else just created is kept)."""
        if not self.bucket.exists():
            raise RemoteError(f"{self.url}: the bucket (container) does not exist or cannot be seen with these "
                              "credentials; create it first (adaptvc does not create buckets)")
        self.check_conditional_writes()
        config = json.dumps({"format": FORMAT_VERSION, "hash": HASH_NAME, "bare": True}, indent=2).encode()
        for key, data in ((CONFIG, config), (HEAD, f"ref: {HEADS}main\n".encode())):
            with contextlib.suppress(PreconditionFailed):
                self.bucket.put(key, data, if_none_match=True)

    def check_conditional_writes(self) -> None:
        """Refuse (ConditionalWritesUnsupported) a service that ignores If-None-Match or If-Match: a probe object
        is created, created again, and replaced against an ETag it does not have; both must be refused."""
        if self._conditional_writes_checked:
            return
        key = f"tmp/probe-{uuid.uuid4().hex}"
        try:
            self.bucket.put(key, b"probe 1\n", if_none_match=True)
            try:
                self.bucket.put(key, b"probe 2\n", if_none_match=True)
            except PreconditionFailed:
                pass
            else:
                raise ConditionalWritesUnsupported(self.url, "ignored If-None-Match: * (it replaced an existing "
                                                             "object with a create-only write)")
            try:
                self.bucket.put(key, b"probe 3\n", if_match=_NO_SUCH_ETAG)
            except PreconditionFailed:
                pass
            else:
                raise ConditionalWritesUnsupported(self.url, "ignored If-Match (it replaced an object whose ETag "
                                                             "did not match)")
        finally:
            with contextlib.suppress(AdaptvcError):
                self.bucket.delete(key)
        self._conditional_writes_checked = True

    # -- refs ---------------------------------------------------------------------------------------------
    def _read_ref(self, key: str) -> tuple[str | None, str | None]:
        """(commit id, problem) of one ref key."""
        try:
            got = self.bucket.read(key, MAX_REF_OBJECT)
        except RemoteError as e:
            if "larger than" in str(e):
                return None, "too large"
            raise
        if got is None:
            return None, "vanished"
        try:
            text = got[0].decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, "not text"
        return (text, None) if is_object_id(text) else (None, "does not hold a commit id")

    def list_refs(self) -> dict[str, str]:
        self._check()
        keys: list[str] = []
        skipped: list[str] = []
        for prefix in (HEADS, TAGS):
            for key in self.bucket.list(prefix):
                try:
                    check_full_ref(key)
                except InvalidRefNameError:
                    skipped.append(key)
                    continue
                keys.append(key)
        results: dict[str, tuple[str | None, str | None]] = {}

        def read_one(key: str) -> int:
            results[key] = self._read_ref(key)
            return 0

        _Transfers(self.workers).run(read_one, keys)
        out: dict[str, str] = {}
        self.unreadable_refs = {}
        for key in sorted(keys):
            oid, problem = results[key]
            if oid is None:
                self.unreadable_refs[key] = problem or "cannot be read"
            else:
                out[key] = oid
        self.skipped_refs = sorted(skipped)
        return out

    def default_branch(self) -> str | None:
        refs = self.list_refs()
        got = self.bucket.read(HEAD, MAX_REF_OBJECT)
        if got is not None:
            with contextlib.suppress(UnicodeDecodeError, InvalidRefNameError):
                text = got[0].decode("utf-8").strip()
                if text.startswith("ref: " + HEADS):
                    branch = text[len("ref: " + HEADS):]
                    check_ref_name(branch)
                    if HEADS + branch in refs:
                        return branch
        return super().default_branch()

    def _move_ref(self, u: RefUpdate) -> None:
        data = f"{u.new}\n".encode()
        try:
            if u.old is None:
                self.bucket.put(u.ref, data, if_none_match=True)
                return
            got = self.bucket.read(u.ref, MAX_REF_OBJECT)
            if got is None or got[0].decode("utf-8", "replace").strip() != u.old:
                raise NonFastForwardError(u.ref, self.name)
            self.bucket.put(u.ref, data, if_match=got[1])
        except PreconditionFailed:
            raise NonFastForwardError(u.ref, self.name) from None

    # -- download -----------------------------------------------------------------------------------------
    def _wanted(self, store: ObjectStore, commits: list[str]) -> tuple[list[str], list[str], list[str], dict[str, int]]:
        """(blobs, snapshots, commits oldest first, sizes) that ``store`` lacks. Every commit and snapshot is read
        from the bucket, verified and decoded here (a snapshot's decoding applies the adapter path rule)."""
        blobs: list[str] = []
        snaps: list[str] = []
        new_commits: list[str] = []
        sizes: dict[str, int] = {}
        seen: set[str] = set()
        stack = list(commits)
        while stack:
            oid = stack.pop()
            if oid in seen or store.has(oid):
                continue
            seen.add(oid)
            commit = self.store.read_commit(oid)
            new_commits.append(oid)
            sizes[oid] = self.store.size(oid)
            stack.extend(commit.parents)
            if commit.snapshot in seen or store.has(commit.snapshot):
                continue
            seen.add(commit.snapshot)
            snapshot = self.store.read_snapshot(commit.snapshot)
            snaps.append(commit.snapshot)
            sizes[commit.snapshot] = self.store.size(commit.snapshot)
            for b, n in blob_sizes(snapshot).items():
                if b not in seen and not store.has(b):
                    seen.add(b)
                    blobs.append(b)
                    sizes[b] = n
        new_commits.reverse()
        return blobs, snaps, parents_first(new_commits, lambda oid: self.store.read_commit(oid).parents), sizes

    def download(self, store: ObjectStore, commits: list[str], progress: Progress = SILENT) -> int:
        self._check()
        blobs, snaps, new_commits, sizes = self._wanted(store, commits)  # nothing is stored locally before this
        if not new_commits:
            return 0
        total = sum(sizes.values())
        progress.begin("fetch", total)
        sent = _Progressed(progress, total)
        try:
            store.freshen(new_commits[0])  # opens this thread's write session (gc's protection) before workers write
            owner = threading.get_ident()
            moved = _Transfers(self.workers).run(lambda o: self._fetch_one(store, o, sizes[o], sent, owner), blobs)
            store.flush()
            for oid in snaps:
                moved += self._fetch_one(store, oid, sizes[oid], sent, owner)
            store.flush()
            for oid in new_commits:  # oldest first: a local commit always comes with its past
                moved += self._fetch_one(store, oid, sizes[oid], sent, owner)
            store.flush()
        finally:
            progress.end()
        return moved

    def _fetch_one(self, store: ObjectStore, oid: str, size: int, progress: Progress, owner: int) -> int:
        try:
            with self._local_lock:
                if store.freshen(oid):
                    return 0
            data = self.store.cached(oid)
            if data is not None:  # already verified
                with self._local_lock:
                    store.put_known(oid, data)
                progress.update(len(data))
                return len(data)
            got = self.bucket.stream(object_key(oid))
            if got is None:
                raise RemoteError(f"{self.url} lacks object {oid} (a push was interrupted, or the store is damaged: "
                                  f"push again from a complete clone)")
            remote_size, chunks = got
            if remote_size != size:
                raise CorruptObjectError(oid, f"{remote_size} bytes on {self.url}, {size} expected")
            h = new_hasher()

            def counted() -> Iterator[bytes]:
                seen = 0
                for chunk in chunks:
                    seen += len(chunk)
                    if seen > size:
                        raise CorruptObjectError(oid, f"more than its {size} bytes arrived from {self.url}")
                    h.update(chunk)
                    progress.update(len(chunk))
                    yield chunk

            if size <= PART_SIZE:  # arrives in memory, checked, then stored (the store sees one writer at a time)
                data = b"".join(counted())
                if len(data) != size or h.hexdigest() != oid:
                    raise ChecksumMismatchError(f"object {oid} from {self.url}", oid, h.hexdigest())
                with self._local_lock:
                    store.put_known(oid, data)
                return size
            with self._local_lock:  # a large object streams into the store
                got_id = store.put_stream(io.BufferedReader(ChunkReader(counted()), 1 << 20), size)
            if got_id != oid or h.hexdigest() != oid:
                raise ChecksumMismatchError(f"object {oid} from {self.url}", oid, h.hexdigest())
            return size
        finally:
            if threading.get_ident() != owner:
                store.end_session()  # a worker's session; the caller's (older) one protects what it wrote

    # -- upload -------------------------------------------------------------------------------------------
    def _missing(self, store: ObjectStore, tips: list[str]) -> tuple[list[str], list[str], list[str]]:
        """(blobs, snapshots, commits parents first) reachable from ``tips`` that the bucket lacks. A commit the
        bucket has comes with its whole past (a push writes commits only after everything they name)."""
        commits: list[str] = []
        candidates: dict[str, str] = {}  # oid -> "blob" | "snapshot"
        seen: set[str] = set()
        stack = list(tips)
        while stack:
            oid = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            if self.store.has(oid):
                continue
            commit = store.read_commit(oid)
            commits.append(oid)
            stack.extend(commit.parents)
            if commit.snapshot not in candidates:
                candidates[commit.snapshot] = "snapshot"
                for f in store.read_snapshot(commit.snapshot).files:
                    for b in f.blobs():
                        candidates.setdefault(b, "blob")
        present = self._listed(candidates)

        def probe(oid: str) -> int:
            present[oid] = self.store.has(oid)
            return 0

        _Transfers(self.workers).run(probe, [o for o in candidates if o not in present])
        ordered = parents_first(commits, lambda oid: store.read_commit(oid).parents)
        blobs = [o for o, kind in candidates.items() if kind == "blob" and not present[o]]
        snaps = [o for o, kind in candidates.items() if kind == "snapshot" and not present[o]]
        return blobs, snaps, ordered

    def _listed(self, candidates: dict[str, str]) -> dict[str, bool]:
        """Which candidates the bucket has, from listing ``objects/`` (1,000 keys a request) rather than asking
        for each: the listing stops once it has cost as many requests as asking would, and what it has not
        reached is asked for one by one. An empty dict when there are too few candidates to bother."""
        if len(candidates) < 32:
            return {}
        budget = len(candidates) * 250  # keys: a quarter of the requests the questions would take
        present: dict[str, bool] = {}
        complete = True
        for n, oid in enumerate(self.store.iter_ids()):
            if n >= budget:
                complete = False
                break
            if oid in candidates:
                present[oid] = True
        if complete:
            present.update((o, False) for o in candidates if o not in present)
        return present

    def _local_file(self, store: ObjectStore, oid: str, size: int) -> BinaryIO:
        """The local object for upload. The store is read by one worker at a time (a store may share buffers
        between reads): a small object is read whole, a large one through an opener that gives each caller its
        own file (a disk store's loose objects), every read() again under the lock."""
        with self._local_lock:
            opener = getattr(store, "open", None)
            if size <= PART_SIZE or not callable(opener):
                return io.BytesIO(store.read(oid) if not callable(opener) else _read_all(opener(oid)))
            return _Locked(opener(oid), self._local_lock)

    def _send_one(self, store: ObjectStore, oid: str, progress: Progress) -> int:
        with self._local_lock:
            size = store.size(oid)
        # PreconditionFailed: someone else pushed the object meanwhile, the same bytes by its id
        with self._local_file(store, oid, size) as f, contextlib.suppress(PreconditionFailed):
            self.bucket.put(object_key(oid), _VerifyingReader(f, oid, size), size, if_none_match=True,
                            progress=progress.update)
        return size

    def upload(self, store: ObjectStore, updates: list[RefUpdate], progress: Progress = SILENT) -> int:
        if not self.exists():
            self.create()
        self._check()
        self.check_conditional_writes()
        blobs, snaps, commits = self._missing(store, [u.new for u in updates])
        total = sum(store.size(o) for o in (*blobs, *snaps, *commits))
        progress.begin("push", total)
        sent = _Progressed(progress, total)
        try:
            transfers = _Transfers(self.workers)
            moved = transfers.run(lambda o: self._send_one(store, o, sent), blobs)
            moved += transfers.run(lambda o: self._send_one(store, o, sent), snaps)
            for oid in commits:  # one at a time, parents first: a commit on the remote means its past is too
                moved += self._send_one(store, oid, sent)
            for u in updates:
                self._move_ref(u)
        finally:
            progress.end()
        return moved

    # -- fsck ---------------------------------------------------------------------------------------------
    def fsck(self, progress: Progress = SILENT) -> RemoteFsckReport:
        """Is the remote whole? Every object reachable from its branches and tags present and re-hashed."""
        refs = self.list_refs()
        return fsck_remote_store(self.store, refs, [*self.skipped_refs, *self.unreadable_refs], progress,
                                 workers=self.workers, location=self.url)


def _read_all(f: BinaryIO) -> bytes:
    with f:
        return f.read()


class _Locked(io.RawIOBase):
    """A file whose every read holds ``lock``."""

    def __init__(self, raw: BinaryIO, lock: threading.Lock) -> None:
        self.raw = raw
        self.lock = lock

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        with self.lock:
            return self.raw.read(n)

    def close(self) -> None:
        with self.lock:
            self.raw.close()
        super().close()


class _Progressed(Progress):
    """Thread-safe forwarding of byte counts from the workers, never past the announced total."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.left = total
        self.lock = threading.Lock()

    def update(self, n: int) -> None:
        with self.lock:
            n = min(n, self.left)
            if n > 0:
                self.left -= n
                self.progress.update(n)
