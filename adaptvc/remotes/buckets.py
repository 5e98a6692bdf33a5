"""A bucket of an object-storage service (S3 and compatibles, Azure Blob), as the few calls adaptvc needs.

``open_bucket("s3://bucket/prefix")`` or ``open_bucket("az://container/prefix")`` gives a :class:`Bucket` whose
keys are relative to the prefix. Writes can be conditional: ``if_none_match=True`` creates an object only if
the key is free (``If-None-Match: *``), ``if_match=ETAG`` replaces it only if it is still the version that was
read (``If-Match``); a condition that fails raises :class:`PreconditionFailed`. Large objects are uploaded in
parts (S3 multipart, Azure blocks) with the same conditions on the final commit of the parts.

Credentials come only from the services' standard chains (AWS: environment, profile, SSO, instance role,
``AWS_ENDPOINT_URL`` for S3-compatible services; Azure: a connection string or account variables in the
environment, or ``azure-identity``'s default chain), never from a URL or the command line, and never appear in
a message. The client libraries are extras (``adaptvc[s3]``, ``adaptvc[azure]``), imported only here, when a
bucket is opened.
"""

from __future__ import annotations

import importlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import AdaptvcError, InvalidInputError
from .base import RemoteError

#: objects up to this size go in one request; larger ones in parts of this size (or more, for huge objects)
PART_SIZE = 16 << 20
#: how many transfers run at once unless ADAPTVC_TRANSFER_WORKERS says otherwise
DEFAULT_WORKERS = 8
MAX_WORKERS = 64
WORKERS_ENV = "ADAPTVC_TRANSFER_WORKERS"

ProgressCallback = Callable[[int], None]


class PreconditionFailed(RemoteError):
    """A conditional write was refused: the key exists (create-only) or changed since it was read (If-Match)."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        super().__init__(f"{url}: {key} was written by someone else in the meantime (precondition failed)")


class ConditionalWritesUnsupported(RemoteError):
    """The service accepts writes but ignores (or refuses) their conditions: pushing there could lose work."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(
            f"{url}: refusing to push: the storage service {detail}, so two pushes at once could overwrite each "
            "other (adaptvc moves refs only by conditional writes: If-None-Match / If-Match)")


def transfer_workers(environ: dict[str, str] | None = None) -> int:
    """How many objects move at once: ``ADAPTVC_TRANSFER_WORKERS`` (1 to 64), default 8."""
    raw = (os.environ if environ is None else environ).get(WORKERS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_WORKERS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise InvalidInputError(WORKERS_ENV, f"must be a whole number from 1 to {MAX_WORKERS}, not {raw[:20]!r}")
    return n


def part_size_for(size: int) -> int:
    """Part size for a multipart upload of ``size`` bytes (S3 allows at most 10,000 parts)."""
    return max(PART_SIZE, -(-size // 10_000))


def read_exactly(f: BinaryIO, n: int) -> bytes:
    """``n`` bytes from ``f`` (a short file is an error: the caller said how many bytes there are)."""
    out = bytearray()
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            raise RemoteError(f"the data to upload ended after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


_KEY_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def sized(data: bytes | bytearray | memoryview | BinaryIO, size: int | None) -> tuple[bytes | BinaryIO, int]:
    """What :meth:`Bucket.put` writes, and how many bytes: bytes-like data whole (a ``size`` given must match
    it), a file for exactly ``size`` bytes (which it must then be given)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if size is not None and size != len(data):
            raise ValueError(f"size {size} given for {len(data)} bytes")
        return data, len(data)
    if size is None:
        raise ValueError("size is required when data is a file")
    return data, size


def check_prefix(prefix: str, url: str) -> str:
    """A bucket prefix from a URL: plain path components, no '..' or empty parts; returned without slashes."""
    prefix = prefix.strip("/")
    if prefix:
        for part in prefix.split("/"):
            if not _KEY_PART.match(part) or part in (".", ".."):
                raise RemoteError(f"invalid path in remote URL {url!r}: use letters, digits, '.', '-', '_' and '/'")
    return prefix


#: the first request of a bounded read: enough for any ref, commit or snapshot, and it tells the object's size
FIRST_READ = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")


def size_from_content_range(content_range: object, length: int) -> int:
    """The whole object's size from a ranged answer's ``Content-Range`` (``length``: the answer's own size,
    when it was not ranged)."""
    match = _CONTENT_RANGE.match(str(content_range or ""))
    return int(match.group(1)) if match else int(length)


class Bucket(ABC):
    """Keys below one prefix of one bucket (or Azure container)."""

    #: ``s3://bucket/prefix`` or ``az://container/prefix``, for messages
    url: str

    def get(self, key: str, byte_range: tuple[int, int] | None = None, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes (``byte_range``: the half-open ``(start, end)`` slice), or None when absent. With
        ``max_bytes``, a larger object is refused (RemoteError) before its body is read."""
        if byte_range is None:
            if max_bytes is not None:
                got = self.read(key, max_bytes)
                return None if got is None else got[0]
            return self._fetch(key)
        start, end = byte_range
        if end <= start:
            return b"" if self.head(key) is not None else None
        if max_bytes is not None and end - start > max_bytes:
            raise RemoteError(f"{self.url}/{key}: a range of {end - start} bytes is over {max_bytes}; refused")
        return self._fetch(key, start, end - start)

    def read(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        """The whole object and the ETag of exactly those bytes (to replace it with ``if_match``), or None."""
        # a first request of at most 1 MiB says the object's size (refs, commits and snapshots fit in it)
        first = self._fetch_start(key, min(max_bytes + 1, FIRST_READ))
        if first is None:
            return None
        data, total, etag = first
        if total > max_bytes:
            raise RemoteError(f"{self.url}/{key} is larger than {max_bytes} bytes ({total}); refused")
        if len(data) < total:  # the rest, only if the object is still the one whose start was read
            rest = self._fetch(key, len(data), total - len(data), if_match=etag)
            if rest is None:
                return None
            data += rest
        if len(data) != total:
            raise RemoteError(f"{self.url}/{key}: {len(data)} bytes arrived of {total}")
        return data, etag

    @abstractmethod
    def _fetch(self, key: str, offset: int | None = None, length: int | None = None,
               if_match: str | None = None) -> bytes | None:
        """The object's bytes (``length`` of them from ``offset`` when given; only while its ETag is ``if_match``
        when given), or None when absent."""

    @abstractmethod
    def _fetch_start(self, key: str, length: int) -> tuple[bytes, int, str] | None:
        """The object's first ``length`` bytes (fewer when it is smaller), its whole size and its ETag, or None
        when absent."""

    @abstractmethod
    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        """``(size, chunks)`` of the object, read as it arrives, or None when absent."""

    @abstractmethod
    def head(self, key: str) -> tuple[int, str] | None:
        """``(size, etag)``, or None when the key is absent."""

    @abstractmethod
    def put(self, key: str, data: bytes | BinaryIO, size: int | None = None, *, if_none_match: bool = False,
            if_match: str | None = None, progress: ProgressCallback | None = None) -> str:
        """Write ``size`` bytes (all of ``data`` when it is bytes); returns the new ETag. ``if_none_match``:
        only if the key is absent; ``if_match``: only if the object still has that ETag. PreconditionFailed when
        the condition fails. ``progress(n)`` is called as bytes are sent. Objects larger than a part go up in
        parts; if reading ``data`` raises, the upload is abandoned and nothing appears under ``key``."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (relative to the bucket's prefix)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the key (no error when it is absent)."""

    @staticmethod
    def check_url(url: str) -> tuple[str, str]:
        """``(bucket, prefix)`` of a URL this kind of bucket can have, checked without a client, a credential or
        a request (each service refines it with its own naming rules)."""
        _, bucket, prefix = split_url(url)
        return bucket, check_prefix(prefix, url)

    def exists(self) -> bool:
        """True when the bucket (container) itself exists and can be reached."""
        return True

    def close(self) -> None:  # noqa: B027 (optional: most clients need no closing)
        """Release the client's connections."""


#: scheme -> (module, class, extra, package the extra brings)
BUCKET_SCHEMES: dict[str, tuple[str, str, str, str]] = {
    "s3": ("adaptvc.remotes.s3", "S3Bucket", "s3", "boto3"),
    "az": ("adaptvc.remotes.azure", "AzureBucket", "azure", "azure-storage-blob"),
}


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in BUCKET_SCHEMES:
        raise RemoteError(f"not an object-storage URL: {url!r} (expected s3://BUCKET/PREFIX or az://CONTAINER/PREFIX)")
    bucket, _, prefix = rest.partition("/")
    return scheme.lower(), bucket, prefix


def require(module: str, extra: str, package: str) -> Any:
    """Import a client library of an extra, or a one-line error naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AdaptvcError(f"this remote needs {package}: pip install 'adaptvc[{extra}]'") from None


def _bucket_class(url: str) -> Any:
    if not isinstance(url, str) or "\x00" in url:
        raise RemoteError(f"invalid remote URL {url!r}")
    scheme, _, _ = split_url(url)
    module, cls, _, _ = BUCKET_SCHEMES[scheme]
    return getattr(importlib.import_module(module), cls)  # the client library is imported only by the class


def check_bucket_url(url: str) -> None:
    """Refuse an ``s3://`` / ``az://`` URL no bucket can have (bad bucket, container or prefix names), without
    a client library, a credential or a request: adding a remote needs none of them, only using it does."""
    _bucket_class(url).check_url(url)


def open_bucket(url: str) -> Bucket:
    """The bucket at ``s3://bucket/prefix`` or ``az://container/prefix``."""
    return _bucket_class(url)(url)
