"""The Python API: one :class:`Repository` per work tree, with its store in ``.adaptvc/`` beside it.

>>> repo = Repository.init("run1")                 # doctest: +SKIP
>>> model.save_pretrained("run1")                  # doctest: +SKIP
>>> c = repo.commit("epoch 1")                     # doctest: +SKIP
>>> repo.tag("v1")                                 # doctest: +SKIP
>>> repo.checkout("v1", "serve/")                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import getpass
import heapq
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sync
from .atomic import write_atomic
from .errors import (
    AdaptvcError,
    NoAdapterError,
    NotARepositoryError,
    NothingToCommitError,
    RefExistsError,
    RefNotFoundError,
    RepositoryExistsError,
    UncommittedChangesError,
    UnsupportedFormatError,
    WouldOverwriteError,
)
from .gc import DEFAULT_GRACE_SECONDS
from .hashing import HASH_NAME, hash_stream
from .hfcache import resolve_base_folder
from .index import StatCache
from .integrations.gitcode import code_provenance
from .live import is_live_model, load_into, saved_model
from .materialise import materialise
from .objects import FORMAT_VERSION, BasePin, Commit, Snapshot
from .paths import join_inside
from .progress import SILENT, Progress
from .refs import HEADS, REMOTES, TAGS, Refs, check_ref_name
from .remotes import open_remote
from .revisions import resolve_revision
from .snapshot import CONFIG_NAME, build_snapshot, find_adapter_files, is_training_state, read_config
from .status import Status, compare_snapshots, config_changes
from .store import MAX_METADATA_OBJECT, ObjectStore
from .sync import SyncResult

if TYPE_CHECKING:  # the modules behind diff, fsck and base checks load numpy: import them only when used
    from .diff import Diff
    from .fsck import FsckReport
    from .gc import GcReport
    from .version_view import VersionView

ADMIN_DIR = ".adaptvc"
DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class Version:
    """A commit together with the snapshot it points at (what ``show`` prints)."""

    commit: Commit
    snapshot: Snapshot


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _default_author() -> str:
    env = os.environ.get("ADAPTVC_AUTHOR")
    if env:
        return env
    if shutil.which("git"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            def git(key: str) -> str:
                return subprocess.run(["git", "config", "--get", key], capture_output=True, text=True,
                                      timeout=5).stdout.strip()
            name, email = git("user.name"), git("user.email")
            if name:
                return f"{name} <{email}>" if email else name
    with contextlib.suppress(Exception):
        return f"{getpass.getuser()}@{socket.gethostname()}"
    return "unknown"


class Repository:
    """An adaptvc repository: a work tree holding a PEFT adapter, and its store in ``.adaptvc/``.

    ``Repository(path)`` opens the repository that contains ``path`` (searching parent folders, like git);
    ``Repository.init(path)`` creates one.
    """

    def __init__(self, path: str | os.PathLike[str] = ".", *, discover: bool = True) -> None:
        start = Path(path).resolve()
        here = start
        while not (here / ADMIN_DIR / "config.json").is_file():
            if not discover or here.parent == here:
                raise NotARepositoryError(str(start))
            here = here.parent
        self.work_tree = here
        self.admin_dir = here / ADMIN_DIR
        try:
            self.config: dict[str, Any] = json.loads((self.admin_dir / "config.json").read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise UnsupportedFormatError(f"{self.admin_dir / 'config.json'} is unreadable: {e}") from None
        if not isinstance(self.config, dict) or self.config.get("format") != FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"{self.admin_dir} uses repository format {self.config.get('format')!r}; this adaptvc reads "
                f"format {FORMAT_VERSION}: upgrade adaptvc"
            )
        self.store = ObjectStore(self.admin_dir)
        self.refs = Refs(self.admin_dir)

    # -- creating -------------------------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", *, base: str | None = None,
             base_revision: str | None = None, branch: str = DEFAULT_BRANCH) -> Repository:
        """Create ``path/.adaptvc`` (``path`` is created if needed) and return the repository.

        ``base``/``base_revision`` pin a default base model for every commit (overriding what the
        adapter's config says)."""
        root = Path(path)
        admin = root / ADMIN_DIR
        if admin.exists():
            raise RepositoryExistsError(str(admin.resolve()))
        check_ref_name(branch, "branch name")
        root.mkdir(parents=True, exist_ok=True)
        # build in a temporary folder, then rename: a half-initialised repository never exists
        tmp = root / f"{ADMIN_DIR}.init-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("objects", "tmp", "refs/heads", "refs/tags", "logs"):
            (tmp / sub).mkdir(parents=True)
        config: dict[str, Any] = {"format": FORMAT_VERSION, "hash": HASH_NAME, "remotes": {}}
        if base or base_revision:
            config["base"] = {"name_or_path": base, "revision": base_revision}
        write_atomic(tmp / "config.json", json.dumps(config, indent=2, sort_keys=True).encode() + b"\n")
        Refs(tmp).init_head(HEADS + branch)
        try:
            os.rename(tmp, admin)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RepositoryExistsError(str(admin.resolve())) from None
        return cls(root, discover=False)

    # -- refs and revisions ---------------------------------------------------------------------------------
    def head(self) -> str | None:
        """The commit HEAD points at, or None in a repository with no commits."""
        return self.refs.head_commit()

    def current_branch(self) -> str | None:
        """The branch HEAD is on (``main``), or None when HEAD is detached."""
        target = self.refs.head_target()
        return target[len(HEADS):] if target else None

    def resolve(self, rev: str = "HEAD") -> str:
        """The full id of the commit ``rev`` names (``v1``, ``main``, ``HEAD~2``, ``3fa9``, …)."""
        return resolve_revision(rev, self.refs, self.store)

    def read_commit(self, rev: str) -> Commit:
        return self.store.read_commit(self.resolve(rev))

    def show(self, rev: str = "HEAD") -> Version:
        commit = self.read_commit(rev)
        return Version(commit, self.store.read_snapshot(commit.snapshot))

    def tags(self) -> dict[str, str]:
        return self.refs.list(TAGS)

    def branches(self) -> dict[str, str]:
        return self.refs.list(HEADS)

    def decorations(self) -> dict[str, list[str]]:
        """``{commit id: ["HEAD -> main", "tag: v1", …]}`` for labelling a log."""
        out: dict[str, list[str]] = {}
        branch = self.current_branch()
        head = self.head()
        if head and branch is None:
            out.setdefault(head, []).append("HEAD")
        for name, oid in self.branches().items():
            out.setdefault(oid, []).append(f"HEAD -> {name}" if name == branch else name)
        for name, oid in self.tags().items():
            out.setdefault(oid, []).append(f"tag: {name}")
        for name, oid in self.refs.list(REMOTES).items():
            out.setdefault(oid, []).append(name)
        return out

    # -- committing -----------------------------------------------------------------------------------------
    def _base_pin(self, source: Path, snapshot: Snapshot, base: str | None,
                  base_revision: str | None) -> BasePin:
        """The base-model pin of a new commit: ``--base``/``--base-revision`` of the commit, else of the
        repository (``init --base``), else the adapter config's ``base_model_name_or_path``/``revision``.
        A local path in the config is kept beside a portable name, and fingerprints the base when it is at
        hand."""
        config_path = next((f.path for f in snapshot.files if f.path.rpartition("/")[2] == CONFIG_NAME),
                           CONFIG_NAME)
        cfg = read_config(source, config_path)
        default = self.config.get("base") or {}
        cfg_name = cfg.get("base_model_name_or_path") if isinstance(cfg.get("base_model_name_or_path"), str) else None
        cfg_rev = cfg.get("revision") if isinstance(cfg.get("revision"), str) else None
        name = base or default.get("name_or_path") or cfg_name or None
        from_config = not (base or default.get("name_or_path"))
        revision = base_revision or default.get("revision") or (cfg_rev if from_config else None)
        local = cfg_name if cfg_name and cfg_name != name and Path(cfg_name).expanduser().is_dir() else None
        fingerprint = None
        if resolve_base_folder(local or name, revision) is not None:  # the base is at hand: fingerprint it
            from .basemodel import pin_fingerprint

            fingerprint = pin_fingerprint(self, snapshot, local or name, revision)
        return BasePin(name if isinstance(name, str) else None, revision if isinstance(revision, str) else None,
                       fingerprint, local)

    def verify_base(self, rev: str, base: str | Any, *, subfolder: str | None = None) -> str:
        """Check ``base`` (a folder, a Hub name in the local cache, or a live model) against version ``rev``'s
        pin and its adapter's modules; raise :class:`~adaptvc.basemodel.BaseMismatchError` naming what
        differs. Returns a short description of what was checked."""
        from .basemodel import target_modules, verify_folder_base, verify_live_base

        version = self.show(rev)
        folder = (subfolder or "").strip("/")
        if isinstance(base, (str, os.PathLike)):
            verify_folder_base(self, version, str(base), folder)
        else:
            verify_live_base(self, version, base, folder)
        n = len(target_modules(version.snapshot, folder))
        pinned = "fingerprint matches" if version.commit.base.fingerprint else "no fingerprint was pinned"
        return f"{n} adapter modules found in the base with the right shapes; {pinned}"

    def commit(self, message: str, source: str | os.PathLike[str] | Any | None = None, *,
               base: str | None = None, base_revision: str | None = None,
               metadata: dict[str, Any] | None = None, author: str | None = None,
               allow_empty: bool = False, allow_pickle: bool = False, with_training_state: bool = False,
               adapter_name: str | None = None, progress: Progress = SILENT) -> Commit:
        """Snapshot the adapter in ``source`` and record it as a new commit on the current branch. Returns the
        commit (``.id``, ``.parents``, ``.message``, ``.base``, …).

        ``source`` is a folder in PEFT layout (default: the work tree) or a live ``PeftModel``: a model is
        committed exactly as ``model.save_pretrained(dir)`` and a commit of ``dir`` would (all its adapters,
        or only ``adapter_name``). ``with_training_state`` also keeps a Trainer checkpoint's optimizer,
        scheduler, RNG and trainer state files, as opaque blobs (never unpickled).

        Objects are written and made durable before the commit, and the commit before the branch moves,
        so a crash at any point leaves the store consistent. If another process moved the branch
        meanwhile, :class:`~adaptvc.errors.RefMovedError` is raised and nothing is lost.

        ``adapter_model.bin`` (pickle) is refused unless ``allow_pickle``; then it is loaded with
        ``torch.load(weights_only=True)`` and stored as safetensors."""
        if source is not None and is_live_model(source):
            with saved_model(source, self.store.tmp_dir, adapter_name) as folder:
                return self.commit(message, folder, base=base, base_revision=base_revision, metadata=metadata,
                                   author=author, allow_empty=allow_empty, progress=progress,
                                   with_training_state=with_training_state)
        src = Path(source) if source is not None else self.work_tree
        head_ref = self.refs.head_target()
        parent = self.refs.head_commit()
        files = find_adapter_files(src, allow_pickle=allow_pickle, with_training_state=with_training_state)
        snapshot = build_snapshot(files, self.store, progress, self._stat_cache(src))
        if parent and not allow_empty and self.store.read_commit(parent).snapshot == snapshot.id:
            raise NothingToCommitError(parent)
        self.store.put_snapshot(snapshot)
        commit = Commit(
            snapshot=snapshot.id,
            parents=(parent,) if parent else (),
            message=message,
            author=author or _default_author(),
            timestamp=_now(),
            base=self._base_pin(src, snapshot, base, base_revision),
            provenance=code_provenance(src),
            metadata=dict(metadata or {}),
        )
        self.store.flush()
        self.store.put_commit(commit)
        self.store.flush()
        reflog = f"commit{'' if parent else ' (initial)'}: {commit.summary}"
        if head_ref is not None:
            self.refs.set_if_equals(head_ref, parent, commit.id, reflog)
        else:
            self.refs.set_head(commit.id, reflog, expected=parent)
        return commit

    def load(self, model: Any, rev: str = "HEAD", *, adapter_name: str = "default", is_trainable: bool = False,
             subfolder: str | None = None, force: bool = False) -> Any:
        """Version ``rev`` as a ``PeftModel`` on ``model`` (a base model, or a PeftModel to add it to as
        ``adapter_name``), built straight from the store. Refuses a base that does not match the version's
        base-model pin unless ``force``. Needs the torch extra."""
        return load_into(self, model, rev, adapter_name=adapter_name, is_trainable=is_trainable,
                         subfolder=subfolder, force=force)

    # -- history --------------------------------------------------------------------------------------------
    def log(self, rev: str | None = None, max_count: int | None = None) -> list[Commit]:
        """Commits reachable from ``rev`` (default HEAD; ``[]`` when there are none), newest first."""
        if rev is None:
            head = self.head()
            if head is None:
                return []
            start = head
        else:
            start = self.resolve(rev)
        out: list[Commit] = []
        seen = {start}
        first = self.store.read_commit(start)
        # newest first (by commit time, as git log does), each commit once
        queue: list[tuple[float, int, Commit]] = [(0.0, 0, first)]
        counter = 1
        while queue and (max_count is None or len(out) < max_count):
            _, _, commit = heapq.heappop(queue)
            out.append(commit)
            for p in commit.parents:
                if p not in seen:
                    seen.add(p)
                    parent = self.store.read_commit(p)
                    heapq.heappush(queue, (-_epoch(parent.timestamp), counter, parent))
                    counter += 1
        return out

    # -- comparing ------------------------------------------------------------------------------------------
    def worktree_snapshot(self, source: str | os.PathLike[str] | None = None) -> Snapshot:
        """A snapshot of ``source`` (default: the work tree), hashed but not stored; empty without an adapter."""
        folder = Path(source) if source is not None else self.work_tree
        try:
            files = find_adapter_files(folder)
        except NoAdapterError:
            return Snapshot(())
        return build_snapshot(files, None, cache=self._stat_cache(folder))

    def _stat_cache(self, folder: Path) -> StatCache | None:
        """The work tree's stat cache (other folders have none)."""
        if folder.resolve() != self.work_tree:
            return None
        return StatCache(self.admin_dir / "index.json", self.work_tree)

    def status(self, source: str | os.PathLike[str] | None = None) -> Status:
        """How the work tree (or ``source``) differs from HEAD, by tensor, config key and file."""
        head = self.head()
        old = self.store.read_snapshot(self.store.read_commit(head).snapshot).without(is_training_state) \
            if head else None
        folder = Path(source) if source is not None else self.work_tree
        new = self.worktree_snapshot(folder)
        st = compare_snapshots(old, new, head)
        keys: list[str] = []
        for path in st.files_modified + st.files_added + st.files_removed:
            prefix, _, name = path.rpartition("/")
            if name != CONFIG_NAME:
                continue
            before = self.config_at(old, path) if old else {}
            after = read_config(folder, path) if new.file(path) else {}
            keys += [f"{prefix}/{k}" if prefix else k for k in config_changes(before, after)]
        return replace(st, config_keys=sorted(keys))

    def config_at(self, snapshot: Snapshot, path: str = CONFIG_NAME) -> dict[str, Any]:
        """The adapter config stored at ``path`` in ``snapshot`` ({} when absent)."""
        entry = snapshot.file(path)
        if entry is None:
            return {}
        data = json.loads(self.store.read(entry.hash, MAX_METADATA_OBJECT))
        return data if isinstance(data, dict) else {}

    def version_view(self, rev: str | None) -> VersionView:
        """A readable view of version ``rev``, or of the work tree when ``rev`` is None."""
        from .version_view import WORKTREE, VersionView, folder_configs

        if rev is None:
            snap = self.worktree_snapshot()
            configs = folder_configs(snap, lambda p: read_config(self.work_tree, p))
            return VersionView(WORKTREE, snap, self.store, self.work_tree, configs)
        commit = self.read_commit(rev)
        snap = self.store.read_snapshot(commit.snapshot)
        return VersionView(commit.id, snap, self.store, None, folder_configs(snap, lambda p: self.config_at(snap, p)))

    def diff(self, a: str | None = "HEAD", b: str | None = None, *, tensors: str | None = None) -> Diff:
        """Compare version ``a`` with version ``b`` (None: the work tree), per tensor, per LoRA module and in
        the config. ``tensors`` is a glob limiting the tensor names (matched anywhere in the name)."""
        from .diff import diff_versions

        return diff_versions(self.version_view(a), self.version_view(b), tensors)

    # -- checking out ---------------------------------------------------------------------------------------
    def checkout(self, rev: str, out_dir: str | os.PathLike[str] | None = None, *, force: bool = False,
                 with_training_state: bool = False, progress: Progress = SILENT) -> Commit:
        """Write version ``rev`` in standard PEFT layout.

        With ``out_dir``, into that folder (refusing to overwrite files that differ unless ``force``);
        HEAD does not move. Without it, into the work tree: uncommitted changes are refused unless
        ``force``, and HEAD moves to ``rev`` (onto the branch when ``rev`` names one, else detached).
        Training state kept with the version is written only with ``with_training_state`` (then
        ``trainer.train(resume_from_checkpoint=out_dir)`` resumes from it)."""
        oid = self.resolve(rev)
        commit = self.store.read_commit(oid)
        snapshot = self.store.read_snapshot(commit.snapshot)
        if not with_training_state:
            snapshot = snapshot.without(is_training_state)
        if out_dir is not None:
            out = Path(out_dir)
            if (out.resolve() / ADMIN_DIR).resolve() == self.admin_dir or self.admin_dir in out.resolve().parents:
                raise WouldOverwriteError([str(out)])
            if not force:
                conflicts = _conflicting_files(out, snapshot)
                if conflicts:
                    raise WouldOverwriteError(conflicts)
            materialise(self.store, snapshot, out, progress)
            return commit
        self._update_work_tree(snapshot, force, progress)
        if rev not in ("HEAD", "@"):
            branch = self._branch_named(rev)
            self.refs.set_head(HEADS + branch if branch else oid, f"checkout: moving to {rev}")
        return commit

    def _branch_named(self, rev: str) -> str | None:
        """The branch ``rev`` names as a whole (``exp``, ``refs/heads/exp``), if any: checking one out puts
        HEAD on it; any other revision detaches HEAD."""
        if rev.startswith(TAGS):
            return None
        name = rev[len(HEADS):] if rev.startswith(HEADS) else rev
        try:
            if self.refs.read(HEADS + name) is None:
                return None
            if not rev.startswith(HEADS) and self.refs.read(TAGS + name) is not None:
                return None  # a tag of the same name wins when resolving, as in git
        except AdaptvcError:
            return None
        return name

    def _update_work_tree(self, snapshot: Snapshot, force: bool, progress: Progress) -> None:
        head = self.head()
        if not force:
            st = self.status()
            if not st.clean:
                raise UncommittedChangesError(st.changed_paths)
        current = self.store.read_snapshot(self.store.read_commit(head).snapshot) if head else None
        keep = {f.path for f in snapshot.files}
        remove = [f.path for f in current.files if f.path not in keep and not is_training_state(f.path)] \
            if current else []
        materialise(self.store, snapshot, self.work_tree, progress, remove=remove)
        cache = StatCache(self.admin_dir / "index.json", self.work_tree)
        for f in snapshot.files:  # what was just written is known: the next status need not read it
            with contextlib.suppress(OSError):
                cache.record(f.path, os.stat(join_inside(self.work_tree, f.path)), f)
        cache.save()

    def switch(self, branch: str, *, create: bool = False, force: bool = False,
               progress: Progress = SILENT) -> None:
        """Make ``branch`` the current branch, updating the work tree to its version. With ``create``,
        the branch is made at HEAD first (the work tree is left as it is)."""
        check_ref_name(branch, "branch name")
        if create:
            self.branch(branch)
            self.refs.set_head(HEADS + branch, f"switch: create {branch}")
            return
        oid = self.refs.read(HEADS + branch)
        if oid is None:
            raise RefNotFoundError(f"branch {branch!r}; create it with 'adaptvc switch -c {branch}'")
        if oid != self.head():
            self._update_work_tree(self.show(oid).snapshot.without(is_training_state), force, progress)
        self.refs.set_head(HEADS + branch, f"switch: moving to {branch}")

    # -- remotes --------------------------------------------------------------------------------------------
    def remotes(self) -> dict[str, str]:
        """``{name: url}`` of the configured remotes."""
        remotes = self.config.get("remotes") or {}
        return {k: v["url"] for k, v in sorted(remotes.items()) if isinstance(v, dict) and "url" in v}

    def _write_config(self) -> None:
        write_atomic(self.admin_dir / "config.json", json.dumps(self.config, indent=2, sort_keys=True).encode() + b"\n")

    def add_remote(self, name: str, url: str) -> None:
        check_ref_name(name, "remote name")
        if "/" in name:
            raise AdaptvcError(f"invalid remote name {name!r}: no '/'")
        if name in self.remotes():
            raise RefExistsError(f"remote {name!r}", f" ({self.remotes()[name]}); remove it first")
        open_remote(url, name)  # refuses URLs no remote type understands
        self.config.setdefault("remotes", {})[name] = {"url": url}
        self._write_config()

    def remove_remote(self, name: str) -> None:
        if name not in self.remotes():
            raise RefNotFoundError(f"remote {name!r}")
        del self.config["remotes"][name]
        self._write_config()
        for branch in self.refs.list(f"{REMOTES}{name}/"):
            ref = f"{REMOTES}{name}/{branch}"
            self.refs.set_if_equals(ref, self.refs.read(ref), None, f"remote remove {name}")

    def push(self, remote: str | None = None, branches: list[str] | None = None, *, tags: bool = False,
             private: bool = False, progress: Progress = SILENT) -> SyncResult:
        """Send the current branch (or ``branches``), and with ``tags`` every tag, to ``remote``; only a
        fast-forward is accepted (else "run adaptvc pull")."""
        return sync.push(self, remote, branches, tags, private, progress)

    def fetch(self, remote: str | None = None, progress: Progress = SILENT) -> SyncResult:
        """Bring what the local store lacks from ``remote``; update ``refs/remotes/<remote>/…`` and new tags."""
        return sync.fetch(self, remote, progress)

    def pull(self, remote: str | None = None, *, force: bool = False, progress: Progress = SILENT) -> SyncResult:
        """Fetch, then fast-forward the current branch and the work tree; a diverged branch is refused."""
        return sync.pull(self, remote, force, progress)

    @classmethod
    def clone(cls, url: str, directory: str | os.PathLike[str] | None = None, *, revision: str | None = None,
              progress: Progress = SILENT) -> Repository:
        """A new repository in ``directory`` with every version of ``url`` and its default branch checked out
        (or ``revision``)."""
        return sync.clone(url, directory, revision, progress)

    # -- maintenance ----------------------------------------------------------------------------------------
    def fsck(self, progress: Progress = SILENT) -> FsckReport:
        """Re-hash every object and check that everything the history refers to exists."""
        from .fsck import fsck

        return fsck(self.store, self.refs, progress)

    def gc(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False, *, aggressive: bool = False,
           progress: Progress = SILENT) -> GcReport:
        """Delete objects no ref, tag or reflog entry reaches and that are older than ``grace_seconds``;
        with ``aggressive``, also compress the tensors that remain (lossless, byte-grouped zstd)."""
        from .gc import gc

        return gc(self.store, self.refs, grace_seconds, dry_run, aggressive, progress)

    # -- tags and branches ----------------------------------------------------------------------------------
    def _create_ref(self, prefix: str, kind: str, name: str, rev: str, force: bool) -> str:
        check_ref_name(name, f"{kind} name")
        oid = self.resolve(rev)
        current = self.refs.read(prefix + name)
        if current is not None and not force:
            raise RefExistsError(f"{kind} {name!r}", " (use --force to move it)")
        self.refs.set_if_equals(prefix + name, current, oid, f"{kind}: {name} at {rev}")
        return oid

    def _delete_ref(self, prefix: str, kind: str, name: str) -> str:
        check_ref_name(name, f"{kind} name")
        current = self.refs.read(prefix + name)
        if current is None:
            raise RefNotFoundError(f"{kind} {name!r}")
        self.refs.set_if_equals(prefix + name, current, None, f"{kind}: delete {name}")
        return current

    def tag(self, name: str, rev: str = "HEAD", *, force: bool = False) -> str:
        """Name the commit ``rev`` as tag ``name``; returns the commit id."""
        return self._create_ref(TAGS, "tag", name, rev, force)

    def delete_tag(self, name: str) -> str:
        return self._delete_ref(TAGS, "tag", name)

    def branch(self, name: str, rev: str = "HEAD", *, force: bool = False) -> str:
        """Create branch ``name`` at ``rev``; returns the commit id."""
        if force and name == self.current_branch():
            raise AdaptvcError(f"cannot force-move the current branch {name!r}; use 'adaptvc checkout' instead")
        return self._create_ref(HEADS, "branch", name, rev, force)

    def delete_branch(self, name: str) -> str:
        if name == self.current_branch():
            raise AdaptvcError(f"cannot delete the current branch {name!r}; switch to another branch first")
        return self._delete_ref(HEADS, "branch", name)


def _epoch(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def _conflicting_files(out: Path, snapshot: Snapshot) -> list[str]:
    """Files of ``out`` that the snapshot would overwrite with different content."""
    conflicts = []
    for f in snapshot.files:
        target = join_inside(out, f.path)
        if not target.exists():
            continue
        if not target.is_file() or target.stat().st_size != f.size:
            conflicts.append(str(target))
            continue
        with open(target, "rb") as fh:
            if hash_stream(fh)[0] != f.hash:
                conflicts.append(str(target))
    return conflicts
