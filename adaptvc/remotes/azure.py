"""Azure Blob Storage as a :class:`~adaptvc.remotes.buckets.Bucket`, via azure-storage-blob.

``az://CONTAINER/PREFIX``. Conditional writes are Blob Storage's ETags: create-only is ``If-None-Match: *`` (the
SDK's ``overwrite=False``), replace is ``If-Match`` on the ETag that was read; a large blob goes up as blocks
and the condition applies to the commit of the block list, so it appears whole or not at all.

Credentials, in this order, from the environment only: ``AZURE_STORAGE_CONNECTION_STRING``; or
``AZURE_STORAGE_ACCOUNT_NAME`` (or ``AZURE_STORAGE_ACCOUNT``) with ``AZURE_STORAGE_KEY``,
``AZURE_STORAGE_SAS_TOKEN``, or else azure-identity's ``DefaultAzureCredential`` (service principal variables,
managed identity, ``az login``). ``AZURE_STORAGE_BLOB_ENDPOINT`` overrides the account's endpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import AdaptvcError
from .base import RemoteError
from .buckets import (
    PART_SIZE,
    Bucket,
    PreconditionFailed,
    ProgressCallback,
    check_prefix,
    read_exactly,
    require,
    size_from_content_range,
    sized,
    split_url,
    transfer_workers,
)

_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def _transport() -> Any:
    """An HTTP transport whose connection pool fits the parallel transfers (the default keeps 10 connections
    and logs a warning for each one it has to drop)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=transfer_workers() + 4)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=True)


def _first_line(text: object) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]


class AzureBucket(Bucket):
    def __init__(self, url: str) -> None:
        container, self.prefix = self.check_url(url)
        self.url = f"az://{container}/{self.prefix}" if self.prefix else f"az://{container}"
        self._root = self.prefix + "/" if self.prefix else ""
        blob = require("azure.storage.blob", "azure", "azure-storage-blob")
        options = {"max_single_put_size": PART_SIZE, "max_block_size": PART_SIZE, "transport": _transport()}
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        with self._calling(""):
            if conn:
                service = blob.BlobServiceClient.from_connection_string(conn, **options)
            else:
                service = blob.BlobServiceClient(self._endpoint(), credential=self._credential(), **options)
        self.container_name = container
        self.container: Any = service.get_container_client(container)

    @staticmethod
    def check_url(url: str) -> tuple[str, str]:
        """``(container, prefix)`` of a valid ``az://`` URL, checked without a client or credentials."""
        _, container, prefix = split_url(url)
        if not _CONTAINER.match(container):
            raise RemoteError(f"invalid Azure container name {container!r} in {url!r}")
        return container, check_prefix(prefix, url)

    def _endpoint(self) -> str:
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT")
        if endpoint:
            return endpoint
        if not account:
            raise RemoteError(f"{self.url}: no Azure storage account configured; set AZURE_STORAGE_CONNECTION_STRING,"
                              " or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN "
                              "(or log in for azure-identity)")
        if not re.match(r"^[a-z0-9]{3,24}$", account):
            raise RemoteError(f"invalid Azure storage account name {account!r}")
        return f"https://{account}.blob.core.windows.net"

    def _credential(self) -> Any:
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        key = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
        if key and account:
            return {"account_name": account, "account_key": key}
        sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if sas:
            return sas
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise RemoteError(f"{self.url}: no Azure credentials in the environment; set AZURE_STORAGE_KEY or "
                              "AZURE_STORAGE_SAS_TOKEN, or pip install azure-identity to use az login or a managed "
                              "identity") from None
        return DefaultAzureCredential()

    def _key(self, key: str) -> str:
        return self._root + key

    # -- errors ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _calling(self, key: str, conditional: bool = False) -> Iterator[None]:
        try:
            yield
        except AdaptvcError:
            raise
        except Exception as e:  # azure-core raises HTTP, connection, authentication and parsing errors
            raise self._explain(e, key, conditional) from None

    def _explain(self, e: Exception, key: str, conditional: bool) -> AdaptvcError:
        where = f"{self.url}/{key}" if key else self.url
        status = getattr(e, "status_code", None)
        code = str(getattr(e, "error_code", "") or "")
        if conditional and (status in (409, 412) or (status == 404 and code == "BlobNotFound")):
            return PreconditionFailed(self.url, key)
        if code == "ContainerNotFound":
            return RemoteError(f"{self.url}: no container named {self.container_name!r}; create it first (adaptvc "
                               "does not create containers)")
        if status in (401, 403) or type(e).__name__ == "ClientAuthenticationError":
            return RemoteError(f"{where}: not allowed ({code or status}); check the Azure credentials in the "
                               "environment (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY, a SAS token)")
        if status is None and type(e).__name__ in ("ServiceRequestError", "ServiceResponseError"):
            return RemoteError(f"{self.url}: cannot reach Azure Blob Storage ({type(e).__name__}); check "
                               "AZURE_STORAGE_BLOB_ENDPOINT or the connection string, and the network")
        text = _first_line(getattr(e, "message", None) or e)
        return RemoteError(f"{where}: {code or status or type(e).__name__}: {text}")

    @staticmethod
    def _missing(e: Exception) -> bool:
        return getattr(e, "status_code", None) == 404 and getattr(e, "error_code", None) != "ContainerNotFound"

    # -- reading --------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        with self._calling(""):
            return bool(self.container.exists())

    def head(self, key: str) -> tuple[int, str] | None:
        try:
            p = self.container.get_blob_client(self._key(key)).get_blob_properties()
        except Exception as e:
            if self._missing(e):
                return None
            raise self._explain(e, key, False) from None
        return int(p.size), str(p.etag)

    def _download(self, key: str, offset: int | None = None, length: int | None = None,
                  etag: str | None = None) -> Any:
        conditions: dict[str, Any] = {}
        if etag is not None:
            from azure.core import MatchConditions

            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            return self.container.get_blob_client(self._key(key)).download_blob(offset=offset, length=length,
                                                                                max_concurrency=1, **conditions)
        except Exception as e:
            if self._missing(e):
                return None
            if getattr(e, "status_code", None) == 416 and offset == 0:  # a range over an empty blob
                return self._download(key)
            raise self._explain(e, key, False) from None

    def _fetch_start(self, key: str, length: int) -> tuple[bytes, int, str] | None:
        d = self._download(key, 0, length)
        if d is None:
            return None
        total = size_from_content_range(getattr(d.properties, "content_range", None), d.size)  # the blob's size
        with self._calling(key):
            return d.readall(), total, str(d.properties.etag)

    def _fetch(self, key: str, offset: int | None = None, length: int | None = None,
               if_match: str | None = None) -> bytes | None:
        d = self._download(key, offset, length, if_match)
        if d is None:
            return None
        with self._calling(key):
            return d.readall()

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        d = self._download(key)
        if d is None:
            return None

        def chunks() -> Iterator[bytes]:
            with self._calling(key):
                yield from d.chunks()

        return int(d.size), chunks()

    def list(self, prefix: str) -> Iterator[str]:
        start = self._key(prefix)
        with self._calling(prefix):
            for item in self.container.list_blobs(name_starts_with=start):
                name = str(item.name)
                if name.startswith(start):
                    yield name[len(self._root):]

    # -- writing --------------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        try:
            self.container.get_blob_client(self._key(key)).delete_blob()
        except Exception as e:
            if not self._missing(e):
                raise self._explain(e, key, False) from None

    def put(self, key: str, data: bytes | BinaryIO, size: int | None = None, *, if_none_match: bool = False,
            if_match: str | None = None, progress: ProgressCallback | None = None) -> str:
        from azure.core import MatchConditions

        data, size = sized(data, size)
        if not isinstance(data, bytes) and size <= PART_SIZE:
            data = read_exactly(data, size)  # one request with a Content-Length (a stream would go chunked)
        kw: dict[str, Any] = {"overwrite": not if_none_match}
        if if_match is not None:
            kw.update(overwrite=True, etag=if_match, match_condition=MatchConditions.IfNotModified)
        if progress is not None:
            done = [0]

            def hook(current: int, total: int | None) -> None:
                if current > done[0]:
                    progress(current - done[0])
                    done[0] = current

            kw["progress_hook"] = hook
        with self._calling(key, conditional=if_none_match or if_match is not None):
            r = self.container.get_blob_client(self._key(key)).upload_blob(data, length=size, max_concurrency=1,
                                                                           **kw)
        return str(r["etag"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
