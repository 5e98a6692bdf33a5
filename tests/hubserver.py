"""A small Hugging Face Hub-compatible HTTP server for tests, spoken to by the official huggingface_hub client.

No Hub-compatible server exists on the package registries, so this implements the part of the Hub API that
adaptvc and PEFT depend on (see issue "Remotes"): repositories with a real commit history, branches, tags,
preupload + LFS batch + upload, ndjson commits with ``parentCommit`` (412 when stale), refs, commits, tree,
``resolve`` with ``X-Repo-Commit``/``ETag``/``X-Linked-*`` headers and ``Range`` support, and YAML
validation. It counts the bytes it serves so tests can prove what a fetch moved.

Run it with the :func:`hub` fixture (``from tests.hubserver import hub``), which also points the client at it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_THRESHOLD = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FileRec:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class CommitRec:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, FileRec]


@dataclass
class RepoRec:
    id: str
    private: bool
    commits: dict[str, CommitRec] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        if rev.startswith("refs/heads/") and rev[11:] in self.branches:
            return self.branches[rev[11:]]
        if rev in self.commits:
            return rev
        matches = [c for c in self.commits if len(rev) >= 7 and c.startswith(rev)]
        return matches[0] if len(matches) == 1 else None


@dataclass
class Stats:
    bytes_served: int = 0
    bytes_received: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lfs_uploads: list[str] = field(default_factory=list)

    def served_for(self, path_part: str) -> int:
        return sum(n for p, n in self.served_by_path.items() if path_part in p)

    served_by_path: dict[str, int] = field(default_factory=dict)


class HubState:
    """Repositories, LFS objects and statistics, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, RepoRec] = {}
        self.lfs: dict[str, bytes] = {}
        self.stats = Stats()
        self._counter = itertools.count()
        self.honour_range = True
        self.fail_commits = False  # answer every commit with a server error (a Hub that refuses an upload)

    def new_commit(self, repo: RepoRec, parent: str | None, title: str, message: str,
                   tree: dict[str, FileRec]) -> CommitRec:
        # unique like the Hub's (a cache keyed by commit id must never see two contents under one id)
        cid = hashlib.sha1(f"{repo.id}|{parent}|{title}|{next(self._counter)}|{uuid.uuid4()}".encode()).hexdigest()
        rec = CommitRec(cid, parent, title, message, "adaptvc-test",
                        datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", tree)
        repo.commits[cid] = rec
        return rec

    def create_repo(self, repo_id: str, private: bool) -> RepoRec:
        repo = RepoRec(repo_id, private)
        first = self.new_commit(repo, None, "initial commit", "",
                                {".gitattributes": FileRec(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                                                           False)})
        repo.branches["main"] = first.id
        self.repos[repo_id] = repo
        return repo

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.body = status, code, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by HubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet; never logs tokens
        pass

    # -- plumbing -------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        with self.state.lock:
            self.state.stats.bytes_received += len(data)
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    @property
    def authorised(self) -> bool:
        return (self.headers.get("Authorization") or "").startswith("Bearer ")

    def _repo(self, repo_id: str, write: bool = False) -> RepoRec:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorised):
            raise HubError(404, "Repository Not Found", "RepoNotFound")
        if write and not self.authorised:
            raise HubError(401, "Invalid credentials in Authorization header")
        return repo

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        with self.state.lock:
            self.state.stats.requests.append((method, url.path, self.headers.get("Range")))
        try:
            self._route(method, parts, query)
        except HubError as e:
            headers = {"X-Error-Code": e.code} if e.code else {}
            headers["X-Error-Message"] = str(e)
            self._send(e.status, json.dumps(e.body or {"error": str(e)}).encode(), headers, head=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routing --------------------------------------------------------------------------------------------
    def _route(self, method: str, p: list[str], query: dict[str, list[str]]) -> None:
        s = self.state
        if method == "POST" and p[:3] == ["api", "repos", "create"]:
            return self._create_repo()
        if method == "DELETE" and p[:3] == ["api", "repos", "delete"]:
            return self._delete_repo()
        if method == "POST" and p[:2] == ["api", "validate-yaml"]:
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if method == "PUT" and p[:1] == ["lfs-upload"]:
            return self._lfs_put(p[-1])
        if len(p) >= 4 and p[0] == "api" and p[1] == "models":
            repo_id = f"{p[2]}/{p[3]}"
            rest = p[4:]
            with s.lock:
                if method == "GET" and not rest:
                    return self._model_info(repo_id, None)
                if method == "GET" and rest[:1] == ["revision"]:
                    return self._model_info(repo_id, "/".join(rest[1:]))
                if method == "GET" and rest == ["refs"]:
                    return self._refs(repo_id)
                if method == "GET" and rest[:1] == ["commits"]:
                    return self._commits(repo_id, "/".join(rest[1:]) or "main")
                if method == "GET" and rest[:1] == ["tree"]:
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
                if method == "POST" and rest[:1] == ["paths-info"]:
                    return self._paths_info(repo_id, rest[1])
                if method == "POST" and rest[:1] == ["preupload"]:
                    return self._preupload(repo_id, "/".join(rest[1:]))
                if method == "POST" and rest[:1] == ["commit"]:
                    return self._commit(repo_id, "/".join(rest[1:]))
                if rest[:1] == ["branch"]:
                    return self._branch(method, repo_id, "/".join(rest[1:]))
                if rest[:1] == ["tag"]:
                    return self._tag(method, repo_id, "/".join(rest[1:]))
        if method == "POST" and len(p) >= 5 and p[1].endswith(".git") and p[2:] == ["info", "lfs", "objects", "batch"]:
            with s.lock:
                return self._lfs_batch(f"{p[0]}/{p[1][:-4]}")
        if method in ("GET", "HEAD") and len(p) >= 5 and p[2] == "resolve":
            with s.lock:
                return self._resolve(method, f"{p[0]}/{p[1]}", p[3], "/".join(p[4:]))
        raise HubError(404, f"no route for {method} {self.path}")

    # -- repositories ---------------------------------------------------------------------------------------
    def _delete_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self.authorised:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo_id = f"{body.get('organization')}/{body.get('name')}" if body.get("organization") else body.get("name")
        with self.state.lock:
            if self.state.repos.pop(repo_id, None) is None:
                raise HubError(404, "Repository Not Found", "RepoNotFound")
        self._json(200, {})

    def _create_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self.authorised:
            raise HubError(401, "Invalid credentials in Authorization header")
        name, org = body.get("name"), body.get("organization")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        url = f"http://{self.headers.get('Host')}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                raise HubError(409, "You already created this model repo", body={"error": "exists", "url": url})
            private = bool(body.get("private")) or body.get("visibility") == "private"
            self.state.create_repo(repo_id, private)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _model_info(self, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id)
        cid = repo.resolve(rev or "main")
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        commit = repo.commits[cid]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": cid, "private": repo.private,
                         "lastModified": commit.date, "createdAt": commit.date, "author": repo_id.split("/")[0],
                         "tags": [], "downloads": 0, "likes": 0, "library_name": "peft",
                         "siblings": [{"rfilename": path} for path in sorted(commit.tree)]})

    def _refs(self, repo_id: str) -> None:
        repo = self._repo(repo_id)
        self._json(200, {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                         for n, c in sorted(repo.branches.items())],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(repo.tags.items())],
            "converts": [],
        })

    def _commits(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        cid = repo.resolve(rev)
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        out = []
        while cid is not None:
            c = repo.commits[cid]
            out.append({"id": c.id, "title": c.title, "message": c.message, "date": c.date,
                        "authors": [{"user": c.author}]})
            cid = c.parent
        self._json(200, out)

    def _entries(self, commit: CommitRec, prefix: str, recursive: bool) -> list[dict]:
        out, dirs = [], set()
        for path, f in sorted(commit.tree.items()):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            rel = path[len(prefix.rstrip("/")) + 1:] if prefix else path
            if "/" in rel and not recursive:
                d = (prefix.rstrip("/") + "/" if prefix else "") + rel.split("/")[0]
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0})
                continue
            out.append(self._entry(path, f))
        return out

    def _entry(self, path: str, f: FileRec) -> dict:
        e = {"type": "file", "path": path, "oid": git_blob_sha1(f.data), "size": len(f.data)}
        if f.lfs:
            e["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        return e

    def _tree(self, repo_id: str, rev: str, path: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        cid = repo.resolve(rev)
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        self._json(200, self._entries(repo.commits[cid], path, recursive))

    def _paths_info(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        cid = repo.resolve(rev)
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        raw = self._body()
        try:
            paths = json.loads(raw).get("paths", [])
        except ValueError:
            paths = parse_qs(raw.decode()).get("paths", [])
        tree = repo.commits[cid].tree
        self._json(200, [self._entry(p, tree[p]) for p in paths if p in tree])

    # -- writing --------------------------------------------------------------------------------------------
    def _preupload(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id, write=True)
        body = json.loads(self._body() or b"{}")
        cid = repo.resolve(rev)
        tree = repo.commits[cid].tree if cid else {}
        files = []
        for f in body.get("files", []):
            lfs = f["path"].endswith(".safetensors") or int(f.get("size", 0)) >= LFS_THRESHOLD
            existing = tree.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": existing.oid if existing else None})
        self._json(200, {"files": files, "commitOid": cid})

    def _lfs_batch(self, repo_id: str) -> None:
        self._repo(repo_id, write=True)
        body = json.loads(self._body() or b"{}")
        host = self.headers.get("Host")
        objects = []
        for o in body.get("objects", []):
            item = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.state.lfs:
                item["actions"] = {"upload": {"href": f"http://{host}/lfs-upload/{repo_id}/{o['oid']}"}}
            objects.append(item)
        self._json(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch")
        with self.state.lock:
            self.state.lfs[oid] = data
            self.state.stats.lfs_uploads.append(oid)
        self._send(200, b"")

    def _commit(self, repo_id: str, branch: str) -> None:
        repo = self._repo(repo_id, write=True)
        if not self.authorised:
            raise HubError(401, "Invalid credentials in Authorization header")
        if self.state.fail_commits:
            self._body()
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.branches[branch]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[head].tree)
        for item in lines:
            key, v = item["key"], item["value"]
            if key == "file":
                tree[v["path"]] = FileRec(base64.b64decode(v["content"]), False)
            elif key == "lfsFile":
                if v["oid"] not in self.state.lfs:
                    raise HubError(422, f"LFS object {v['oid']} was not uploaded")
                tree[v["path"]] = FileRec(self.state.lfs[v["oid"]], True)
            elif key == "deletedFile":
                tree.pop(v["path"], None)
            elif key == "deletedFolder":
                for p in [p for p in tree if p.startswith(v["path"].rstrip("/") + "/")]:
                    del tree[p]
        rec = self.state.new_commit(repo, head, header.get("summary", ""), header.get("description", ""), tree)
        repo.branches[branch] = rec.id
        host = self.headers.get("Host")
        self._json(200, {"commitOid": rec.id, "commitUrl": f"http://{host}/{repo_id}/commit/{rec.id}",
                         "pullRequestUrl": None, "success": True})

    def _branch(self, method: str, repo_id: str, branch: str) -> None:
        repo = self._repo(repo_id, write=True)
        if method == "DELETE":
            repo.branches.pop(branch, None)
            return self._json(200, {})
        body = json.loads(self._body() or b"{}")
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = repo.resolve(body.get("startingPoint") or "main")
        if start is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        repo.branches[branch] = start
        self._json(200, {})

    def _tag(self, method: str, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id, write=True)
        if method == "DELETE":
            repo.tags.pop(rev, None)
            return self._json(200, {})
        body = json.loads(self._body() or b"{}")
        tag = body.get("tag")
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        cid = repo.resolve(rev)
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        repo.tags[tag] = cid
        self._json(200, {})

    # -- reading files --------------------------------------------------------------------------------------
    def _resolve(self, method: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        cid = repo.resolve(rev)
        if cid is None:
            raise HubError(404, "Revision Not Found", "RevisionNotFound")
        f = repo.commits[cid].tree.get(path)
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = f.data
        headers = {"X-Repo-Commit": cid, "ETag": f'"{f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        range_header = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if m and self.state.honour_range and method == "GET":
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                raise HubError(416, "Range Not Satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
            status = 206
        if method == "GET":
            with self.state.lock:
                self.state.stats.bytes_served += len(data)
                key = f"{repo_id}/{path}"
                self.state.stats.served_by_path[key] = self.state.stats.served_by_path.get(key, 0) + len(data)
        self._send(status, data, headers, content_type="application/octet-stream", head=method == "HEAD")


class HubServer:
    """The server on 127.0.0.1 with a free port, in a thread."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def stats(self) -> Stats:
        return self.state.stats

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running local Hub; the official client (already imported or not) is pointed at it, online."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_secret")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub.constants as constants

    # constants are read once, at import: set them for this test too
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    import huggingface_hub.hf_api as hf_api

    monkeypatch.setattr(hf_api.api, "endpoint", server.url)  # the module-level HfApi behind file_exists & co
    if hasattr(constants, "is_offline_mode"):
        monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    try:
        import transformers.utils.hub as tf_hub

        monkeypatch.setattr(tf_hub, "_is_offline_mode", False, raising=False)
    except ImportError:
        pass
    from huggingface_hub.utils import _xet

    monkeypatch.setattr(_xet, "is_xet_available", lambda: False, raising=False)
    import huggingface_hub._commit_api as commit_api

    monkeypatch.setattr(commit_api, "is_xet_available", lambda: False, raising=False)
    yield server
    server.stop()
