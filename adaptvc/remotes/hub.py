"""The Hugging Face Hub as a remote: every adaptvc version is a Hub commit that plain PEFT can load.

Layout of each Hub commit (``docs/remotes.md``):

* the adapter's files at the root, byte for byte (``adapter_model.safetensors``, ``adapter_config.json``,
  sub-folder adapters, tokenizer files), so ``PeftModel.from_pretrained(base, repo, revision=tag)`` works;
* ``README.md``: a model card with the Hub's YAML front matter and the version history (the adapter's own
  README, if it has one, is kept byte for byte at ``.adaptvc/README.md``);
* ``.adaptvc/commit.json`` and ``.adaptvc/snapshot.json``: the adaptvc objects, canonical bytes, from which
  the local history is rebuilt (their hashes are their ids, so they are verified on arrival).

Branches and tags map to Hub branches and tags. A push creates one Hub commit per adaptvc commit with
``parent_commit`` set (compare-and-swap: a concurrent push makes the Hub answer 412, and we refuse like git).
A fetch reads the two small JSON files per version and only the byte ranges of the tensors the local
store lacks (HTTP ``Range``), falling back to one whole download when a server ignores ``Range``.
A Hub repository that adaptvc never pushed to is imported: each Hub commit holding an adapter becomes an
adaptvc commit (message from the commit title, base from the adapter config).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import AdaptvcError, AdaptvcWarning, ChecksumMismatchError, InvalidRefNameError
from ..hashing import hash_bytes
from ..objects import BasePin, Commit, Snapshot, decode_json_object
from ..ops.capture import MAX_CONFIG_FILE, MAX_PLAIN_FILE, build_snapshot, find_adapter_files, read_config
from ..ops.graph import first_parent_chain, walk
from ..ops.materialise import materialise
from ..ops.record import write_commit
from ..peft_layout import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from ..progress import SILENT, Progress
from ..refnames import HEADS, TAGS, check_ref_name
from ..storage.base import MAX_METADATA_OBJECT, ObjectStore
from .base import NonFastForwardError, RefUpdate, Remote, RemoteError
from .hub_card import MAX_ROWS, is_portable_name, model_card

META_DIR = ".adaptvc"
COMMIT_FILE = f"{META_DIR}/commit.json"
SNAPSHOT_FILE = f"{META_DIR}/snapshot.json"
CARD = CARD_NAME
ORIGINAL_CARD = f"{META_DIR}/README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
#: two missing tensors closer than this are fetched in one range request
RANGE_GAP = 1 << 20


def hub_path(snapshot_path: str) -> str:
    """Where a snapshot file lives in the Hub tree (the top-level README is replaced by the model card)."""
    return ORIGINAL_CARD if snapshot_path == CARD else snapshot_path


def _hf() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise AdaptvcError("the Hub remote needs huggingface_hub: pip install huggingface_hub") from None
    return huggingface_hub


class HubRemote(Remote):
    def __init__(self, url: str, name: str = "origin", local: ObjectStore | None = None) -> None:
        self.url = url
        self.name = name
        self.repo_id = url[len("hf://"):].strip("/")
        if not _REPO_ID.match(self.repo_id) or ".." in self.repo_id:
            raise RemoteError(f"invalid Hub repository {self.repo_id!r}: expected hf://USER/REPO")
        self.local = local
        self.skipped_refs = []
        self._api: Any = None
        self._ids: dict[str, str | None] = {}  # hub commit -> adaptvc commit id (None: not an adaptvc commit)
        self._hub_of: dict[str, str] = {}  # adaptvc commit id -> hub commit
        self._heads: dict[str, str] = {}  # full ref -> hub commit
        self._metadata: dict[str, bytes] = {}  # adaptvc object id -> bytes already downloaded
        self._scanned = False
        self._created = False  # this object created the repository (a failed first push deletes it again)
        self._warned_base = False

    # -- plumbing -------------------------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = _hf().HfApi()
        return self._api

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Every failure of the Hub client (an HTTP error, an unreachable server) as one RemoteError line."""
        try:
            yield
        except AdaptvcError:
            raise
        except Exception as e:  # the client raises HTTP, network and parsing errors of many types
            raise RemoteError(self._explain(e)) from None

    def _url(self, path: str, revision: str) -> str:
        return _hf().hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.api.endpoint)

    def _get(self, path: str, revision: str, byte_range: tuple[int, int] | None = None,
             limit: int | None = None) -> tuple[int, bytes]:
        """GET one file (or one byte range of it) at a Hub revision; returns (status, body). With ``limit``, at
        most that many bytes are asked for and read (RemoteError when the file is larger)."""
        hf = _hf()
        with self._calling():
            headers = hf.utils.build_hf_headers(token=self.api.token)
            if byte_range is not None:
                headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
            elif limit is not None:
                headers["Range"] = f"bytes=0-{limit}"
            with hf.utils.get_session().stream("GET", self._url(path, revision), headers=headers,
                                               follow_redirects=True) as response:
                if response.status_code == 404:
                    return 404, b""
                if response.status_code == 416:  # an empty file asked for with a range
                    return 200, b""
                if response.status_code >= 400:
                    response.read()
                    hf.utils.hf_raise_for_status(response)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if limit is not None and len(body) > limit:
                        raise RemoteError(f"{self.url}@{revision[:12]}: {path} is larger than {limit} bytes; "
                                          "refused")
                status = response.status_code
        if limit is not None and byte_range is None and status == 206:
            status = 200
        return status, bytes(body)

    def _download_to(self, path: str, revision: str, target: Path, limit: int) -> bool:
        """Stream one file to ``target`` (False when the Hub has no such file)."""
        hf = _hf()
        with self._calling():
            headers = hf.utils.build_hf_headers(token=self.api.token)
            with hf.utils.get_session().stream("GET", self._url(path, revision), headers=headers,
                                               follow_redirects=True) as response:
                if response.status_code == 404:
                    return False
                if response.status_code >= 400:
                    response.read()
                    hf.utils.hf_raise_for_status(response)
                written = 0
                with open(target, "xb") as f:
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > limit:
                            raise RemoteError(f"{self.url}@{revision[:12]}: {path} is larger than {limit} bytes")
                        f.write(chunk)
        return True

    # -- the Remote contract ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        with self._calling():
            return bool(self.api.repo_exists(self.repo_id))

    def create(self, private: bool = False) -> None:
        with self._calling():
            self.api.create_repo(self.repo_id, private=private, exist_ok=True)
        self._created = True

    def missing_hint(self) -> str:
        return "; if it is private, log in with 'hf auth login' or set HF_TOKEN"

    def _explain(self, e: BaseException) -> str:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"{self.url}: not allowed (HTTP {status}); log in with 'hf auth login' or set HF_TOKEN "
                    "to a token with access to this repository")
        if status == 404:
            return f"{self.url}: no such repository (or it is private: log in with 'hf auth login')"
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if status is None:  # no answer at all: a network error
            endpoint = self._api.endpoint if self._api is not None else _hf().constants.ENDPOINT
            return f"{self.url}: cannot reach the Hub at {endpoint} ({type(e).__name__}: {text})"
        return f"{self.url}: {text}"

    def _adaptvc_id(self, hub_commit: str) -> str | None:
        if hub_commit not in self._ids:
            status, body = self._get(COMMIT_FILE, hub_commit, limit=MAX_METADATA_OBJECT)
            oid = None
            if status != 404:
                oid = hash_bytes(body)
                Commit.from_dict(decode_json_object(body, oid), oid)  # refuse anything that is not a commit
                self._metadata[oid] = body
                self._hub_of[oid] = hub_commit
            self._ids[hub_commit] = oid
        return self._ids[hub_commit]

    def _hub_refs(self) -> Any:
        with self._calling():
            return self.api.list_repo_refs(self.repo_id)

    def list_refs(self) -> dict[str, str]:
        refs = self._hub_refs()
        out: dict[str, str] = {}
        self._heads = {}
        self.skipped_refs = []
        plain: list[tuple[str, str]] = []
        for prefix, items in ((HEADS, refs.branches), (TAGS, refs.tags)):
            for r in items:
                try:
                    check_ref_name(r.name)
                except InvalidRefNameError:
                    self.skipped_refs.append(prefix + str(r.name))
                    continue
                self._heads[prefix + r.name] = r.target_commit
                oid = self._adaptvc_id(r.target_commit)
                if oid is not None:
                    out[prefix + r.name] = oid
                elif prefix == HEADS:
                    plain.append((prefix + r.name, r.target_commit))
        if not out and plain and self.local is not None:
            out = self._import_plain_repository(refs)
        return out

    def default_branch(self) -> str | None:
        refs = self.list_refs()
        return "main" if HEADS + "main" in refs else super().default_branch()

    # -- download -------------------------------------------------------------------------------------------
    def _object(self, oid: str, path: str, hub_commit: str) -> bytes:
        data = self._metadata.get(oid)
        if data is None:
            status, data = self._get(path, hub_commit, limit=MAX_METADATA_OBJECT)
            if status == 404:
                raise RemoteError(f"{self.url}@{hub_commit[:12]} has no {path}")
        got = hash_bytes(data)
        if got != oid:
            raise ChecksumMismatchError(f"{path} at {hub_commit[:12]}", oid, got)
        return data

    def _hub_commit_of(self, oid: str) -> str | None:
        """The Hub commit that holds adaptvc commit ``oid`` (the whole Hub history is read once if needed)."""
        if oid not in self._hub_of and not self._scanned:
            self._scanned = True
            for head in set(self._heads.values()):
                with self._calling():
                    infos = list(self.api.list_repo_commits(self.repo_id, revision=head))
                for info in infos:
                    self._adaptvc_id(info.commit_id)
        return self._hub_of.get(oid)

    def _find_hub_commit(self, oid: str) -> str:
        hub = self._hub_commit_of(oid)
        if hub is None:
            raise RemoteError(f"{self.url} does not have adaptvc commit {oid[:12]}")
        return hub

    def download(self, store: ObjectStore, commits: list[str], progress: Progress = SILENT) -> int:
        with _hub_bars_off():
            return self._download(store, commits, progress)

    def _download(self, store: ObjectStore, commits: list[str], progress: Progress) -> int:
        # first every commit and snapshot (small, verified, checked against the layout rule): nothing is
        # stored until the whole history to fetch is known to be acceptable
        todo: list[tuple[str, str, bytes, Snapshot, bytes]] = []
        stack, seen = list(commits), set()
        while stack:
            oid = stack.pop()
            if oid in seen or store.has(oid):
                continue
            seen.add(oid)
            hub = self._find_hub_commit(oid)
            data = self._object(oid, COMMIT_FILE, hub)
            commit = Commit.from_dict(decode_json_object(data, oid), oid)
            snap_bytes = self._object(commit.snapshot, SNAPSHOT_FILE, hub)
            snapshot = Snapshot.from_dict(decode_json_object(snap_bytes, commit.snapshot), commit.snapshot)
            todo.append((oid, hub, data, snapshot, snap_bytes))
            stack.extend(commit.parents)
        todo.reverse()  # oldest first
        total = sum(self._missing_bytes(store, snapshot) for _, _, _, snapshot, _ in todo)
        moved = 0
        progress.begin("fetch", total)
        try:
            for oid, hub, data, snapshot, snap_bytes in todo:
                for f in snapshot.files:
                    moved += self._fetch_file(store, f, hub, progress)
                store.flush()
                store.put_known(snapshot.id, snap_bytes)
                store.flush()
                store.put_known(oid, data)  # every commit's objects are stored before it
                store.flush()
                moved += len(snap_bytes) + len(data)
        finally:
            progress.end()
        return moved

    @staticmethod
    def _missing_bytes(store: ObjectStore, snapshot: Snapshot) -> int:
        total = 0
        for f in snapshot.files:
            if f.layout is None:
                total += 0 if store.has(f.hash) else f.size
            else:
                sizes = [(f.layout.header, f.layout.header_size), *((t.blob, t.size) for t in f.layout.tensors)]
                total += sum(size for oid, size in sizes if not store.has(oid))
        return total

    def _fetch_file(self, store: ObjectStore, f: Any, hub: str, progress: Progress) -> int:
        path = hub_path(f.path)
        if f.layout is None:
            if store.freshen(f.hash):
                return 0
            status, data = self._get(path, hub, limit=MAX_PLAIN_FILE)
            if status == 404:
                raise RemoteError(f"{self.url}@{hub[:12]} has no {path}")
            got = hash_bytes(data)
            if got != f.hash:
                raise ChecksumMismatchError(f"{path} at {hub[:12]}", f.hash, got)
            store.put_known(f.hash, data)
            progress.update(len(data))
            return len(data)
        # the parts of the file the store lacks, as (blob, start, end) in file order
        parts, offset = [], 0
        for oid, size in [(f.layout.header, f.layout.header_size), *((t.blob, t.size) for t in f.layout.tensors)]:
            if not store.freshen(oid):
                parts.append((oid, offset, offset + size))
            offset += size
        moved = 0
        whole: bytes | None = None
        for group in _ranges(parts):
            start, end = group[0][1], group[-1][2]
            if whole is None:
                status, body = self._get(path, hub, (start, end))
                if status == 404:
                    raise RemoteError(f"{self.url}@{hub[:12]} has no {path}")
                moved += len(body)
                if status != 206:  # the server ignored Range: this is the whole file, reuse it for every part
                    if len(body) != f.size:
                        raise ChecksumMismatchError(f"{path} at {hub[:12]}", f.hash, hash_bytes(body))
                    whole = body
            if whole is not None:
                body, start = whole, 0
            for oid, a, b in group:
                data = body[a - start:b - start]
                got = hash_bytes(data)
                if got != oid:
                    raise ChecksumMismatchError(f"{path} bytes {a}-{b} at {hub[:12]}", oid, got)
                store.put_known(oid, data)
            progress.update(end - group[0][1])
        return moved

    # -- upload ---------------------------------------------------------------------------------------------
    def upload(self, store: ObjectStore, updates: list[RefUpdate], progress: Progress = SILENT) -> int:
        with _hub_bars_off():
            try:
                return self._upload(store, updates, progress)
            except BaseException:
                if self._created and not any(self._ids.get(h) for h in self._heads.values()):
                    # nothing was pushed into the repository this push created: do not leave it empty
                    with contextlib.suppress(Exception), self._calling():
                        self.api.delete_repo(self.repo_id)
                    self._created = False
                raise

    def _upload(self, store: ObjectStore, updates: list[RefUpdate], progress: Progress) -> int:
        self.list_refs()
        self._pushed_tags: dict[str, list[str]] = {}
        for u in updates:
            if u.ref.startswith(TAGS):
                self._pushed_tags.setdefault(u.new, []).append(u.ref[len(TAGS):])
        plans = []
        for u in sorted(updates, key=lambda u: not u.ref.startswith(HEADS)):  # branches before tags
            if u.ref.startswith(HEADS):
                chain = self._chain(store, u.new)
                plans.append((u, chain, self._tree(store, self._heads.get(u.ref) or self._start(store, chain))))
        total = sum(self._version_bytes(store, chain, tree) for _, chain, tree in plans)
        moved = 0
        progress.begin("push", total)
        try:
            for u, chain, tree in plans:
                moved += self._push_branch(store, u, chain, tree, progress)
            for u in updates:
                if u.ref.startswith(TAGS):
                    self._push_tag(store, u)
        finally:
            progress.end()
        return moved

    def _push_tag(self, store: ObjectStore, u: RefUpdate) -> None:
        hf = _hf()
        hub = self._hub_of.get(u.new) or self._find_hub_commit(u.new)
        try:
            with self._calling():
                try:
                    self.api.create_tag(self.repo_id, tag=u.ref[len(TAGS):], revision=hub,
                                        tag_message=store.read_commit(u.new).summary)
                except hf.errors.HfHubHTTPError as e:
                    if getattr(e.response, "status_code", None) == 409:
                        raise NonFastForwardError(u.ref, self.name) from None
                    raise
        except NonFastForwardError:
            raise

    def _chain(self, store: ObjectStore, new: str) -> list[str]:
        """adaptvc commits from the newest one the Hub has (exclusive) to ``new``, oldest first."""
        return first_parent_chain(store, new, lambda oid: self._hub_commit_of(oid) is not None)

    def _start(self, store: ObjectStore, chain: list[str]) -> str | None:
        """The Hub commit a new branch starts from: the one holding the chain's first parent, else the
        default branch's head (None on an empty repository)."""
        first_parents = store.read_commit(chain[0]).parents if chain else ()
        start = self._hub_commit_of(first_parents[0]) if first_parents else None
        if start is None:
            start = self._heads.get(HEADS + "main") or next(iter(self._heads.values()), None)
        return start

    def _tree(self, store: ObjectStore, hub_commit: str | None) -> dict[str, str | None]:
        """The files of the Hub tree at ``hub_commit``, by snapshot path → adaptvc id (None when the bytes are
        unknown: they are uploaded again). A push writes each version's whole adapter against this tree, so
        every Hub commit holds exactly its version, whatever the local history between them (merges)."""
        if hub_commit is None:
            return {}
        oid = self._ids.get(hub_commit)
        known: dict[str, str] = {}
        if oid is not None and store.has(oid):
            commit = store.read_commit(oid)
            known = {f.path: f.hash for f in store.read_snapshot(commit.snapshot).files}
            if "hub_commit" not in commit.metadata:  # written by adaptvc: the tree is exactly the snapshot
                return dict(known)
        with self._calling():  # a plain Hub commit (imported or not fetched): its files are listed
            listed = self.api.list_repo_files(self.repo_id, revision=hub_commit)
        tree: dict[str, str | None] = {}
        for path in listed:
            if path == ORIGINAL_CARD:
                tree[CARD] = known.get(CARD)
            elif path != CARD and path != ".gitattributes" and not path.startswith(META_DIR + "/"):
                tree[path] = known.get(path)
        return tree

    @staticmethod
    def _version_bytes(store: ObjectStore, chain: list[str], tree: dict[str, str | None]) -> int:
        total, before = 0, tree
        for oid in chain:
            snap = store.read_snapshot(store.read_commit(oid).snapshot)
            total += sum(f.size for f in snap.files if before.get(f.path) != f.hash)
            before = {f.path: f.hash for f in snap.files}
        return total

    def _push_branch(self, store: ObjectStore, u: RefUpdate, chain: list[str], tree: dict[str, str | None],
                     progress: Progress) -> int:
        hf = _hf()
        branch = u.ref[len(HEADS):]
        hub_head = self._heads.get(u.ref)
        if hub_head is not None and self._ids.get(hub_head) != u.old:
            raise NonFastForwardError(u.ref, self.name)
        if hub_head is None:
            start = self._start(store, chain)
            with self._calling():
                try:
                    self.api.create_branch(self.repo_id, branch=branch, revision=start, exist_ok=False)
                except hf.errors.HfHubHTTPError as e:
                    if getattr(e.response, "status_code", 0) == 409:
                        raise NonFastForwardError(u.ref, self.name) from None
                    raise
                listed = self.api.list_repo_refs(self.repo_id)
            hub_head = next(b.target_commit for b in listed.branches if b.name == branch)
        before = tree
        moved = 0
        with tempfile.TemporaryDirectory(prefix="adaptvc-push-") as tmp:
            for oid in chain:
                commit = store.read_commit(oid)
                snapshot = store.read_snapshot(commit.snapshot)
                ops, size = self._operations(store, commit, snapshot, before, Path(tmp))
                with self._calling():
                    try:
                        info = self.api.create_commit(
                            self.repo_id, ops, commit_message=commit.summary or f"adaptvc {oid[:12]}",
                            commit_description="\n".join(commit.message.splitlines()[1:]).strip() or None,
                            revision=branch, parent_commit=hub_head)
                    except hf.errors.HfHubHTTPError as e:
                        if getattr(e.response, "status_code", None) == 412:
                            raise NonFastForwardError(u.ref, self.name) from None
                        raise
                hub_head = info.oid
                self._ids[hub_head] = oid
                self._hub_of[oid] = hub_head
                self._heads[u.ref] = hub_head
                before = {f.path: f.hash for f in snapshot.files}
                moved += size
                progress.update(size)
                for p in Path(tmp).iterdir():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        return moved

    def _operations(self, store: ObjectStore, commit: Commit, snapshot: Snapshot, before: dict[str, str | None],
                    tmp: Path) -> tuple[list[Any], int]:
        """The Hub operations that turn the tree ``before`` into exactly ``snapshot`` (and its card and
        metadata files), and the bytes they upload."""
        hf = _hf()
        changed = [f for f in snapshot.files if before.get(f.path) is None or before[f.path] != f.hash]
        ops: list[Any] = []
        size = 0
        if changed:
            materialise(store, Snapshot(tuple(changed)), tmp)
        for f in changed:
            ops.append(hf.CommitOperationAdd(path_in_repo=hub_path(f.path), path_or_fileobj=str(tmp / f.path)))
            size += f.size
        for path in sorted(set(before) - {f.path for f in snapshot.files}):
            ops.append(hf.CommitOperationDelete(path_in_repo=hub_path(path)))
        history = list(walk(store, [commit.id], max_count=MAX_ROWS, first_parent=True))
        config = {}
        if snapshot.file(CONFIG_NAME) is not None:
            with contextlib.suppress(Exception):
                config = decode_json_object(store.read(snapshot.file(CONFIG_NAME).hash, MAX_METADATA_OBJECT), "config")
        user_card = None
        if snapshot.file(CARD) is not None:
            with contextlib.suppress(Exception):
                user_card = store.read(snapshot.file(CARD).hash, MAX_PLAIN_FILE).decode("utf-8")
        base = commit.base.name_or_path
        if base and not is_portable_name(base) and not self._warned_base:
            self._warned_base = True
            warnings.warn(f"the base model of {commit.id[:12]} is the local path {base!r}, which means nothing on "
                          "the Hub: the card leaves base_model out. Pin a portable name with "
                          "'adaptvc commit --base ORG/MODEL' (or 'adaptvc init --base ORG/MODEL')",
                          AdaptvcWarning, stacklevel=2)
        card = model_card(self.repo_id, commit, snapshot, history, config, user_card, self._hub_of,
                          self._tags_by_commit()).encode()
        snap_bytes = snapshot.encode()
        ops += [hf.CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card),
                hf.CommitOperationAdd(path_in_repo=SNAPSHOT_FILE, path_or_fileobj=snap_bytes),
                hf.CommitOperationAdd(path_in_repo=COMMIT_FILE, path_or_fileobj=commit.encode())]
        return ops, size

    def _tags_by_commit(self) -> dict[str, list[str]]:
        """Tags the Hub has and tags this push creates, by adaptvc commit."""
        out: dict[str, list[str]] = {}
        for ref, hub in self._heads.items():
            oid = self._ids.get(hub)
            if ref.startswith(TAGS) and oid:
                out.setdefault(oid, []).append(ref[len(TAGS):])
        for oid, names in getattr(self, "_pushed_tags", {}).items():
            out.setdefault(oid, []).extend(n for n in names if n not in out.get(oid, []))
        return {k: sorted(v) for k, v in out.items()}

    # -- importing a plain PEFT repository ------------------------------------------------------------------
    def _import_plain_repository(self, refs: Any) -> dict[str, str]:
        """Each Hub commit holding an adapter becomes an adaptvc commit in ``self.local``."""
        store = self.local
        assert store is not None
        out: dict[str, str] = {}
        limits = {CONFIG_NAME: MAX_CONFIG_FILE, WEIGHTS_NAME: 1 << 40, CARD: MAX_PLAIN_FILE}
        for branch in refs.branches:
            if HEADS + branch.name not in self._heads:
                continue  # a name that cannot be a local branch
            with self._calling():
                history = list(reversed(list(self.api.list_repo_commits(self.repo_id,
                                                                        revision=branch.target_commit))))
            parent: str | None = None
            for info in history:
                if self._ids.get(info.commit_id):
                    parent = self._ids[info.commit_id]
                    continue
                with tempfile.TemporaryDirectory(prefix="adaptvc-import-") as tmp:
                    folder = Path(tmp)
                    try:
                        for name, limit in limits.items():
                            self._download_to(name, info.commit_id, folder / name, limit)
                        files = find_adapter_files(folder)
                    except RemoteError:
                        raise
                    except AdaptvcError:
                        continue  # this Hub commit holds no adapter (e.g. the initial .gitattributes)
                    snapshot = build_snapshot(files, store)
                    cfg = read_config(folder)
                    base = cfg.get("base_model_name_or_path")
                    commit = write_commit(
                        store, snapshot, parents=(parent,) if parent else (),
                        message=(info.title or "").strip() + (f"\n\n{info.message.strip()}" if info.message else ""),
                        author=", ".join(info.authors or []) or "unknown",
                        timestamp=info.created_at.isoformat() if info.created_at else "",
                        base=BasePin(base if isinstance(base, str) else None,
                                     cfg.get("revision") if isinstance(cfg.get("revision"), str) else None),
                        metadata={"hub_commit": info.commit_id},
                    )
                    self._ids[info.commit_id] = commit.id
                    self._hub_of[commit.id] = info.commit_id
                    parent = commit.id
            if parent is not None:
                out[HEADS + branch.name] = parent
        for tag in refs.tags:
            oid = self._ids.get(tag.target_commit)
            if oid and TAGS + tag.name in self._heads:
                out[TAGS + tag.name] = oid
        return out


@contextlib.contextmanager
def _hub_bars_off() -> Iterator[None]:
    """adaptvc draws its own progress bar: the Hub client's bars stay off while it works for us."""
    utils = _hf().utils
    was_off = utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            utils.enable_progress_bars()


def _ranges(parts: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """Group (blob, start, end) parts into runs fetched with one range request each."""
    groups: list[list[tuple[str, int, int]]] = []
    for part in parts:
        if groups and part[1] - groups[-1][-1][2] <= RANGE_GAP:
            groups[-1].append(part)
        else:
            groups.append([part])
    return groups
