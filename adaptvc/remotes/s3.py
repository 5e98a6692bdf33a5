"""S3 and S3-compatible services (MinIO, R2, Ceph, moto) as a :class:`~adaptvc.remotes.buckets.Bucket`, via boto3.

Conditional writes are S3's own: ``IfNoneMatch="*"`` on PutObject and CompleteMultipartUpload to create,
``IfMatch=ETAG`` to replace. Credentials and the endpoint come from boto3's standard chain (environment,
``AWS_PROFILE`` and ``~/.aws``, SSO, the instance or task role; ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``
for another service, which is then addressed path-style). Nothing here prints or formats a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import AdaptvcError
from .base import RemoteError
from .buckets import (
    PART_SIZE,
    Bucket,
    ConditionalWritesUnsupported,
    PreconditionFailed,
    ProgressCallback,
    check_prefix,
    part_size_for,
    read_exactly,
    require,
    size_from_content_range,
    sized,
    split_url,
    transfer_workers,
)

_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_READ_BLOCK = 1 << 20


def _client() -> Any:
    """A boto3 S3 client for the current AWS_* environment, made once per process and environment (a client
    loads ~0.25 s of service models; clients are thread-safe)."""
    import boto3
    from botocore.config import Config

    workers = transfer_workers()
    fingerprint = hashlib.sha256(repr((workers, sorted((k, v) for k, v in os.environ.items()
                                                       if k.startswith("AWS_")))).encode()).hexdigest()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(fingerprint)
        if client is None:
            custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
            session = boto3.session.Session()
            retries = {} if "AWS_MAX_ATTEMPTS" in os.environ or "AWS_RETRY_MODE" in os.environ else \
                {"retries": {"max_attempts": 5, "mode": "standard"}}
            config = Config(max_pool_connections=workers + 4,
                            s3={"addressing_style": "path" if custom_endpoint else "auto"}, **retries)
            client = session.client("s3", region_name=session.region_name or "us-east-1", config=config)
            _CLIENTS[fingerprint] = client
        return client


def _first_line(text: object) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]


class S3Bucket(Bucket):
    def __init__(self, url: str) -> None:
        bucket, self.prefix = self.check_url(url)
        self.bucket = bucket
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._root = self.prefix + "/" if self.prefix else ""
        require("boto3", "s3", "boto3")
        with self._calling(""):
            self.client: Any = _client()
        self.endpoint = self.client.meta.endpoint_url

    @staticmethod
    def check_url(url: str) -> tuple[str, str]:
        """``(bucket, prefix)`` of a valid ``s3://`` URL, checked without a client or credentials."""
        _, bucket, prefix = split_url(url)
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise RemoteError(f"invalid S3 bucket name {bucket!r} in {url!r}")
        return bucket, check_prefix(prefix, url)

    def _key(self, key: str) -> str:
        return self._root + key

    # -- errors ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _calling(self, key: str, conditional: bool = False) -> Iterator[None]:
        """Every failure of the client as one line (a failed condition as PreconditionFailed)."""
        try:
            yield
        except AdaptvcError:
            raise
        except Exception as e:  # botocore raises many types: client, connection, credential, parsing errors
            raise self._explain(e, key, conditional) from None

    def _explain(self, e: Exception, key: str, conditional: bool) -> AdaptvcError:
        from botocore import exceptions as bx

        where = f"{self.url}/{key}" if key else self.url
        if isinstance(e, bx.NoCredentialsError):
            return RemoteError(f"{self.url}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or run where an instance role provides them")
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectionError)):
            return RemoteError(f"{self.url}: cannot reach the S3 endpoint {getattr(self, 'endpoint', '?')} "
                               f"({type(e).__name__}); check AWS_ENDPOINT_URL and the network")
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if conditional and (status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")
                                or (status == 404 and code in ("NoSuchKey", "404"))):
                return PreconditionFailed(self.url, key)
            if conditional and (status == 501 or code == "NotImplemented"):
                return ConditionalWritesUnsupported(self.url, "does not implement conditional writes (HTTP 501)")
            if code == "NoSuchBucket":
                return RemoteError(f"{self.url}: no bucket named {self.bucket!r} at {self.endpoint}; create it "
                                   "first (adaptvc does not create buckets)")
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return RemoteError(f"{where}: not allowed ({code or status}); check that your AWS credentials "
                                   "(AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role) have access to this bucket")
            return RemoteError(f"{where}: {code or status}: {_first_line(err.get('Message', ''))}")
        return RemoteError(f"{where}: {type(e).__name__}: {_first_line(e)}")

    @staticmethod
    def _status(e: Exception) -> int | None:
        response = getattr(e, "response", None)
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None

    # -- reading --------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            with contextlib.suppress(ClientError):
                self.client.head_bucket(Bucket=self.bucket)
                return True
        except Exception as e:
            raise self._explain(e, "", False) from None
        return False

    def head(self, key: str) -> tuple[int, str] | None:
        from botocore.exceptions import ClientError

        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if self._status(e) == 404:
                return None
            raise self._explain(e, key, False) from None
        except Exception as e:
            raise self._explain(e, key, False) from None
        return int(r["ContentLength"]), str(r["ETag"])

    def _get_object(self, key: str, **kw: Any) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kw)
        except ClientError as e:
            status = self._status(e)
            if status == 404:
                return None
            if status == 416 and kw.get("Range", "").startswith("bytes=0-"):  # a range over an empty object
                head = self.head(key)
                return None if head is None else {"ContentLength": 0, "ETag": head[1], "Body": None,
                                                  "ContentRange": f"bytes 0-0/{head[0]}"}
            raise self._explain(e, key, False) from None
        except Exception as e:
            raise self._explain(e, key, False) from None

    def _fetch_start(self, key: str, length: int) -> tuple[bytes, int, str] | None:
        r = self._get_object(key, Range=f"bytes=0-{length - 1}")
        if r is None:
            return None
        total = size_from_content_range(r.get("ContentRange"), r.get("ContentLength", 0))
        return self._body(key, r), total, str(r["ETag"])

    def _fetch(self, key: str, offset: int | None = None, length: int | None = None,
               if_match: str | None = None) -> bytes | None:
        kw = {"Range": f"bytes={offset}-{offset + (length or 0) - 1}"} if offset is not None else {}
        if if_match is not None:
            kw["IfMatch"] = if_match
        r = self._get_object(key, **kw)
        return None if r is None else self._body(key, r)

    def _body(self, key: str, r: dict[str, Any]) -> bytes:
        body = r.get("Body")
        if body is None:
            return b""
        try:
            with self._calling(key):
                return body.read()
        finally:
            body.close()

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        r = self._get_object(key)
        if r is None:
            return None
        body = r["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                with self._calling(key):
                    yield from body.iter_chunks(_READ_BLOCK)
            finally:
                body.close()

        return int(r["ContentLength"]), chunks()

    def list(self, prefix: str) -> Iterator[str]:
        start = self._key(prefix)
        with self._calling(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item.get("Key", ""))
                    if key.startswith(start):
                        yield key[len(self._root):]

    # -- writing --------------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        with self._calling(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def put(self, key: str, data: bytes | BinaryIO, size: int | None = None, *, if_none_match: bool = False,
            if_match: str | None = None, progress: ProgressCallback | None = None) -> str:
        data, size = sized(data, size)
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        if size <= PART_SIZE:
            body = data if isinstance(data, bytes) else read_exactly(data, size)
            with self._calling(key, conditional=bool(conditions)):
                r = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **conditions)
            if progress is not None:
                progress(size)
            return str(r["ETag"])
        f = data if not isinstance(data, bytes) else _BytesReader(data)
        return self._multipart(key, f, size, conditions, progress)

    def _multipart(self, key: str, f: Any, size: int, conditions: dict[str, str],
                   progress: ProgressCallback | None) -> str:
        full = self._key(key)
        with self._calling(key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        try:
            parts, sent, number, part = [], 0, 1, part_size_for(size)
            while sent < size:
                chunk = read_exactly(f, min(part, size - sent))  # a reader that finds corrupt bytes raises here
                with self._calling(key):
                    r = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                PartNumber=number, Body=chunk)
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
                sent += len(chunk)
                number += 1
                if progress is not None:
                    progress(len(chunk))
            with self._calling(key, conditional=bool(conditions)):
                r = self.client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                          MultipartUpload={"Parts": parts}, **conditions)
            return str(r["ETag"])
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise



class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos:end])
        self.pos = end
        return out
