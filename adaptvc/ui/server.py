"""The HTTP side of ``adaptvc ui``: the standard library's ``ThreadingHTTPServer``, read-only.

Routes are a fixed table: four pages (one HTML shell the page script fills), the JSON endpoints, and the
static files shipped in ``adaptvc/ui/static`` (read once at start, served from memory: no request ever names
a file). Only GET and HEAD are answered. Every query parameter is checked (known names only, each once,
bounded length, valid text, integers in range) and every revision goes through ``Repository.resolve``; a
bad one is a one-line error (JSON for the API, a page for the pages), never a traceback.

Bound to a loopback address, the server answers only requests whose ``Host`` is a loopback name (a web page
elsewhere cannot reach it by DNS rebinding). Bound to anything else, every request needs the token printed
in the URL (``?token=…`` once, then a cookie; or ``Authorization: token …`` for scripts), as Jupyter does.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import AdaptvcError, InvalidInputError, ObjectNotFoundError, RefNotFoundError, RevisionError
from ..ops.revisions import MAX_REVISION_LENGTH
from ..parsing import text_ok
from ..repository import Repository
from . import data
from .jobs import DiffJobs, QueueFullError, json_bytes

logger = logging.getLogger("adaptvc")
DEFAULT_PORT = 7007
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: longest wait a request may ask for (``?wait=SECONDS`` on the diff and run endpoints)
MAX_WAIT = 600
MAX_QUERY_FIELDS = 8
_DIGITS = re.compile(r"[0-9]{1,9}")
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
PAGES = {"/": "history", "/version": "version", "/compare": "compare", "/run": "run"}
#: the parameters each route accepts (``token`` is accepted everywhere)
PARAMS: dict[str, frozenset[str]] = {
    "/": frozenset(), "/version": frozenset({"rev"}), "/compare": frozenset({"a", "b", "module"}),
    "/run": frozenset({"to", "from", "n"}),
    "/api/history": frozenset({"max"}), "/api/version": frozenset({"rev"}), "/api/refs": frozenset(),
    "/api/status": frozenset(), "/api/diff": frozenset({"a", "b", "wait"}),
    "/api/run": frozenset({"to", "from", "n", "wait"}),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class HttpError(AdaptvcError):
    """A refused request: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (what needs no token)."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _static_files() -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in [*STATIC, "index.html"]}


class UiServer(ThreadingHTTPServer):
    """``adaptvc ui``'s server for the repository at ``work_tree``; :attr:`url` is what to open."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, work_tree: Path, host: str, port: int, token: str | None) -> None:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        self.address_family = infos[0][0]
        self.work_tree = work_tree
        self.host = host
        self.token = token
        self.static = _static_files()
        self._local = threading.local()
        super().__init__((host.strip("[]"), port), Handler)
        self.jobs = DiffJobs(self.open_repo)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url_for(self, host: str) -> str:
        name = f"[{host}]" if ":" in host and not host.startswith("[") else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{name}:{self.port}/{query}"

    @property
    def url(self) -> str:
        """The address to open (with the token when one is needed)."""
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if self.address_family == socket.AF_INET else "::1"
        return self.url_for(host)

    def open_repo(self) -> Repository:
        """A repository object for the calling thread (a store object is not shared between threads)."""
        repo = getattr(self._local, "repo", None)
        if repo is None:
            repo = self._local.repo = Repository(self.work_tree, discover=False)
        return repo

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed outside the handler's own error handling: one line, no traceback."""
        e = sys.exc_info()[1]
        logger.warning("adaptvc ui: a request failed (%s: %s)", type(e).__name__, e)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.jobs.close()


def make_server(repository: str | os.PathLike[str] = ".", host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                token: str | None = None) -> UiServer:
    """A UI server for the repository containing ``repository``, bound to ``host:port`` (port 0: any free
    one); call ``serve_forever()`` (or run it in a thread) and ``close()``. A token is required unless
    ``host`` is a loopback address: pass one, or one is made up (``server.token``, in ``server.url``)."""
    repo = Repository(repository)
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(32)
    return UiServer(repo.work_tree, host, port, token)


# -- requests -----------------------------------------------------------------------------------------------
def _check_path(path: str) -> str:
    """The request's path, or HttpError(403) when it tries to leave the UI's own routes."""
    decoded = unquote(path)
    segments = decoded.split("/")
    if ".." in segments or "." in segments or "\\" in decoded or "\0" in decoded or decoded.startswith("//") \
            or decoded != path:
        raise HttpError(403, "refused: only the UI's own pages, data and files are served")
    return path


def parse_query(route: str, query: str) -> dict[str, str]:
    """The query's parameters: each at most once, known to ``route``, bounded and valid text."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeError):
        raise HttpError(400, "unreadable query string") from None
    out: dict[str, str] = {}
    allowed = PARAMS.get(route, frozenset()) | {"token"}
    for key, value in pairs:
        if key not in allowed:
            raise HttpError(400, f"unknown parameter {key[:40]!r}; this page takes: {', '.join(sorted(allowed))}")
        if key in out:
            raise HttpError(400, f"parameter {key!r} given twice")
        if len(value) > MAX_REVISION_LENGTH or not text_ok(value):
            raise HttpError(400, f"parameter {key!r} is too long or not valid text")
        out[key] = value
    return out


def int_param(params: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise HttpError(400, f"parameter {key!r} must be a whole number from {low} to {high}")
    return int(raw)


class Handler(BaseHTTPRequestHandler):
    server: UiServer
    server_version = "adaptvc-ui"
    timeout = 60  # a client that stops talking does not hold a thread for ever
    _body = True  # False while answering HEAD

    # -- HTTP methods ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _read_only(self) -> None:
        self._send(405, "application/json", json_bytes({"error": "read-only: only GET and HEAD are served"}),
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal belongs to the user
        pass

    # -- one request ----------------------------------------------------------------------------------------
    def _answer(self, body: bool) -> None:
        self._body = body
        api = False
        try:
            try:
                split = urlsplit(self.path)
            except ValueError:
                raise HttpError(400, "unreadable request path") from None
            route = _check_path(split.path)
            api = route.startswith("/api/")
            self._check_host()
            params = parse_query(route, split.query)
            cookie = self._check_token(params)
            if route.startswith("/static/") and route[len("/static/"):] in STATIC:
                name = route[len("/static/"):]
                self._send(200, STATIC[name], self.server.static[name])
            elif route in PAGES:
                self._page(route, params, cookie)
            elif api and route in PARAMS:
                self._api(route, params)
            else:
                raise HttpError(404, f"no such page: {route[:80]}")
        except HttpError as e:
            self._error(e.status, str(e), api)
        except (RevisionError, RefNotFoundError, ObjectNotFoundError) as e:
            self._error(404, str(e), api)
        except QueueFullError as e:
            self._error(503, str(e), api)
        except (InvalidInputError, AdaptvcError) as e:
            self._error(400, str(e), api)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # one line for the page, never a traceback
            text = (str(e).strip().splitlines() or [""])[0]
            self._error(500, f"internal error ({type(e).__name__}: {text}); this is a bug in adaptvc, please "
                             "report it", api)

    def _check_host(self) -> None:
        if self.server.token:
            return
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name):
            raise HttpError(403, "refused: this server answers only to localhost (Host header "
                                 f"{host[:60]!r}); start it with --host to serve other names")

    def _check_token(self, params: dict[str, str]) -> str | None:
        """Nothing when no token is needed or a valid one came; the cookie to set when it came in the query."""
        token = self.server.token
        if not token:
            return None
        given = params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            return f"{self._cookie_name()}={token}; Path=/; HttpOnly; SameSite=Strict"
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and hmac.compare_digest(value.strip().encode(), token.encode()):
            return None
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            jar = SimpleCookie()
        morsel = jar.get(self._cookie_name())
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), token.encode()):
            return None
        raise HttpError(403, "a token is required: open the URL 'adaptvc ui' printed (…/?token=…), or send "
                             "'Authorization: token …'")

    def _cookie_name(self) -> str:
        return f"adaptvc-ui-token-{self.server.port}"

    # -- pages ----------------------------------------------------------------------------------------------
    def _page(self, route: str, params: dict[str, str], cookie: str | None) -> None:
        """The page shell, once the revisions in the URL are known to resolve (else an error page)."""
        repo = self.server.open_repo()
        for key in ("rev", "a", "b", "to", "from"):
            if params.get(key):
                repo.resolve(params[key])
        if route == "/run":
            int_param(params, "n", data.DEFAULT_RUN, 2, data.MAX_RUN)
        if route == "/version" and not params.get("rev"):
            raise HttpError(400, "which version? /version?rev=REV")
        if route == "/compare" and not (params.get("a") and params.get("b")):
            raise HttpError(400, "which versions? /compare?a=REV&b=REV")
        # the history's data is asked for while the page script loads (the script's fetch then reuses it)
        preload = b'<link rel="preload" href="/api/history" as="fetch" crossorigin>' if route == "/" else b""
        shell = self.server.static["index.html"].replace(b"{{page}}", PAGES[route].encode()) \
            .replace(b"{{preload}}", preload)
        self._send(200, "text/html; charset=utf-8", shell, extra={"Set-Cookie": cookie} if cookie else None)

    def _error(self, status: int, message: str, api: bool) -> None:
        if api:
            self._send(status, "application/json", json_bytes({"error": message}))
            return
        text = html.escape(message)
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>adaptvc ui: error</title>'
                f'<link rel="stylesheet" href="/static/app.css"></head><body data-ready="error"><header>'
                f'<a class="brand" href="/">adaptvc</a></header><main><div class="error" id="error"><h1>{status}</h1>'
                f'<p>{text}</p><p><a href="/">Back to the history</a></p></div></main></body></html>')
        self._send(status, "text/html; charset=utf-8", page.encode())

    # -- the JSON endpoints ---------------------------------------------------------------------------------
    def _api(self, route: str, params: dict[str, str]) -> None:
        repo = self.server.open_repo()
        if route == "/api/history":
            count = int_param(params, "max", data.DEFAULT_HISTORY, 1, data.MAX_HISTORY)
            self._json(200, data.history(repo, count))
        elif route == "/api/version":
            self._json(200, data.version(repo, repo.resolve(self._required(params, "rev"))))
        elif route == "/api/refs":
            self._json(200, {"head": repo.head(), "branch": repo.current_branch(),
                             "branches": repo.branches(), "tags": repo.tags()})
        elif route == "/api/status":
            self._json(200, repo.status_json())
        elif route == "/api/diff":
            a = repo.resolve(self._required(params, "a"))
            b = repo.resolve(self._required(params, "b"))
            wait = int_param(params, "wait", 0, 0, MAX_WAIT)
            state, value = self._wait(lambda: self.server.jobs.poll(a, b), wait)
            if state == "done":
                self._send(200, "application/json", value.body)
            elif state == "running":
                self._json(202, {"state": "running", "a": a, "b": b, "progress": value})
            else:
                self._json(500, {"error": value})
        elif route == "/api/run":
            self._run(repo, params)

    def _run(self, repo: Repository, params: dict[str, str]) -> None:
        tip = repo.resolve(params.get("to") or "HEAD")
        first = repo.resolve(params["from"]) if params.get("from") else None
        count = int_param(params, "n", data.DEFAULT_RUN, 2, data.MAX_RUN)
        chain = data.run_chain(repo, tip, first, count)
        pairs = [(x.id, y.id) for x, y in pairwise(chain)]
        if not pairs:
            raise HttpError(400, "a run needs at least two versions")

        def poll() -> tuple[str, Any]:
            heats, running = [], None
            for a, b in pairs:
                state, value = self.server.jobs.poll(a, b)
                if state == "error":
                    return state, value
                if state == "done":
                    heats.append(value.heat)
                elif running is None or running["queued"] > value["queued"]:
                    running = value
            if running is not None:
                return "running", {"pairs_done": len(heats), "pairs_total": len(pairs), **running}
            return "done", heats

        state, value = self._wait(poll, int_param(params, "wait", 0, 0, MAX_WAIT))
        if state == "done":
            self._json(200, {"state": "done", **data.run_grid(chain, value)})
        elif state == "running":
            self._json(202, {"state": "running", "progress": value})
        else:
            self._json(500, {"error": value})

    @staticmethod
    def _wait(poll: Callable[[], tuple[str, Any]], seconds: int) -> tuple[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            state, value = poll()
            if state != "running" or time.monotonic() >= deadline:
                return state, value
            time.sleep(0.05)

    @staticmethod
    def _required(params: dict[str, str], key: str) -> str:
        if not params.get(key):
            raise HttpError(400, f"parameter {key!r} is required")
        return params[key]

    # -- writing --------------------------------------------------------------------------------------------
    def _json(self, status: int, value: Any) -> None:
        self._send(status, "application/json", json_bytes(value))

    def _send(self, status: int, content_type: str, payload: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self._body:
            self.wfile.write(payload)

