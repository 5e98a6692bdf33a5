"""Real object-storage servers on 127.0.0.1 for the tests: moto's S3 server and Azurite (Azure Blob), each a
separate process started once per test session and stopped at its end, plus a counting HTTP proxy that sits
in front of either and records every request (method, key, bytes each way) so that tests count what moved
at the server. The proxy can also play a service that ignores conditional writes (it strips ``If-Match`` and
``If-None-Match``) or refuses them (HTTP 501).

Azurite comes from npm (``npm install --prefix .venv/azurite azurite@3.37.0``); it is looked for at
``$ADAPTVC_AZURITE``, then ``.venv/azurite/node_modules/.bin/azurite-blob``, then on ``PATH``. Without it the
Azure tests are skipped, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every Azurite install; not a secret)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_ENV_KEYS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


@contextlib.contextmanager
def process(cmd: list[str], port: int, what: str, cwd: str | None = None):
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            try:
                wait_for_port(port, proc, what)
            except RuntimeError:
                log.seek(0)
                raise RuntimeError(f"{what} did not start: {log.read()[-2000:].decode(errors='replace')}") from None
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def azurite_command() -> str | None:
    for candidate in (os.environ.get("ADAPTVC_AZURITE"), str(ROOT / ".venv/azurite/node_modules/.bin/azurite-blob"),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- the counting proxy ---------------------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    path: str
    sent: int  # request body bytes (client -> server)
    received: int  # response body bytes (server -> client)
    status: int


@dataclass
class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (host, port) that records every request."""

    upstream: tuple[str, int]
    conditional: str = "pass"  # "pass", "strip" (ignore If-Match / If-None-Match) or "refuse" (HTTP 501)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # quiet
                pass

            def _forward(self) -> None:
                # a request whose body did not arrive whole is never forwarded: a real service answers
                # "incomplete body" and stores nothing (the client that sent it was killed, or cut off)
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = self._read_chunked()
                    if body is None:
                        self.close_connection = True
                        return
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                    if len(body) != length:
                        self.close_connection = True
                        return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length",
                                                "expect")}
                headers["Content-Length"] = str(len(body))
                conditional = any(k.lower() in ("if-match", "if-none-match") for k in headers)
                if conditional and proxy.conditional == "refuse" and self.command == "PUT":
                    self._reply(501, b"<Error><Code>NotImplemented</Code><Message>conditional writes are not "
                                     b"implemented</Message></Error>", {"Content-Type": "application/xml"})
                    proxy._record(self.command, self.path, len(body), 0, 501)
                    return
                if proxy.conditional == "strip":
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("if-match", "if-none-match")}
                conn = self._upstream()
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                out = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("transfer-encoding", "connection", "keep-alive", "content-length")}
                length = resp.getheader("Content-Length")
                if self.command == "GET" and length is not None and "chunked" not in \
                        (resp.getheader("Transfer-Encoding") or ""):
                    # streamed: what is counted is what reached the client (a client that stops reading and
                    # hangs up is not charged for the rest)
                    self._reply(resp.status, b"", {**out, "Content-Length": length}, head=True)
                    written = 0
                    try:
                        while chunk := resp.read(1 << 16):
                            self.wfile.write(chunk)
                            written += len(chunk)
                    finally:
                        proxy._record(self.command, self.path, len(body), written, resp.status)
                        if written < int(length):
                            self.close_connection = True
                            self._drop_upstream()
                    return
                data = resp.read()  # (empty for HEAD; reading it frees the connection)
                if self.command == "HEAD":
                    out["Content-Length"] = length or "0"
                self._reply(resp.status, data, out, head=self.command == "HEAD")
                proxy._record(self.command, self.path, len(body), len(data), resp.status)

            def _drop_upstream(self) -> None:
                conn = getattr(self, "_conn", None)
                self._conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

            def _read_chunked(self) -> bytes | None:
                """The whole chunked body, or None when the stream ended before its last chunk."""
                body = bytearray()
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return None
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(body)
                    chunk = self.rfile.read(size)
                    if len(chunk) != size:
                        return None
                    body += chunk
                    self.rfile.readline()

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(self, "_conn", None)
                if conn is None:
                    conn = self._conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                return conn

            def _reply(self, status: int, data: bytes, headers: dict[str, str], head: bool = False) -> None:
                self.send_response_only(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data and not head:
                    self.wfile.write(data)

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, http.client.HTTPException, TimeoutError):
                    self.close_connection = True
                    self._drop_upstream()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, method: str, path: str, sent: int, received: int, status: int) -> None:
        with self._lock:
            self.requests.append(Request(method, unquote(urlsplit(path).path), sent, received, status))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def received(self, method: str = "GET", containing: str = "") -> int:
        """Body bytes the server sent for requests of ``method`` whose path contains ``containing``."""
        with self._lock:
            return sum(r.received for r in self.requests if r.method == method and containing in r.path)

    def sent(self, method: str = "PUT", containing: str = "") -> int:
        with self._lock:
            return sum(r.sent for r in self.requests if r.method == method and containing in r.path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- servers and buckets --------------------------------------------------------------------------------------
@dataclass
class Service:
    """A running object-storage server: how to reach it and how to make a fresh bucket on it."""

    scheme: str  # "s3" or "az"
    port: int

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The environment a client needs (credentials only through the standard variables)."""
        endpoint = endpoint or f"http://127.0.0.1:{self.port}"
        if self.scheme == "s3":
            return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"}

    def make_bucket(self) -> str:
        name = f"adaptvc-{uuid.uuid4().hex[:16]}"
        if self.scheme == "s3":
            import boto3

            env = self.env()
            boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                         aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=name)
        else:
            from azure.storage.blob import BlobServiceClient

            BlobServiceClient.from_connection_string(self.env()["AZURE_STORAGE_CONNECTION_STRING"]) \
                .create_container(name)
        return name


@pytest.fixture(scope="session")
def s3_service():
    pytest.importorskip("boto3")
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(cmd, port, "moto_server"):
        yield Service("s3", port)


@pytest.fixture(scope="session")
def azure_service(tmp_path_factory):
    pytest.importorskip("azure.storage.blob")
    command = azurite_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("Azurite is not installed: npm install --prefix .venv/azurite azurite@3.37.0")
        pytest.skip("Azurite is not installed (npm install --prefix .venv/azurite azurite@3.37.0)")
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    cmd = [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent", "--skipApiVersionCheck",
           "--loose", "--inMemoryPersistence"]
    with process(cmd, port, "azurite-blob", cwd=str(location)):
        yield Service("az", port)


@dataclass
class ObjectRemote:
    """A fresh, empty remote URL on a service, reached through a counting proxy, with its environment set."""

    service: Service
    proxy: CountingProxy
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.service.scheme}://{self.bucket}/{self.prefix}"

    @property
    def env(self) -> dict[str, str]:
        return self.service.env(self.proxy.endpoint)


@contextlib.contextmanager
def object_remote(service: Service, monkeypatch: pytest.MonkeyPatch, conditional: str = "pass"):
    """A new bucket on ``service`` behind a new proxy; the client environment points at the proxy."""
    proxy = CountingProxy(("127.0.0.1", service.port), conditional)
    try:
        remote = ObjectRemote(service, proxy, service.make_bucket(), "team/adapters")
        for key in S3_ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        for key, value in remote.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254 for a role
        yield remote
    finally:
        proxy.close()
