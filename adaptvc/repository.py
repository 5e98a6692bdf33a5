"""The Python API: one :class:`Repository` per work tree, with its store in ``.adaptvc/`` beside it.

A thin facade: the repository opens the storage (objects, refs, the work tree) and hands it to the operations
in ``adaptvc.ops``, ``adaptvc.sync`` and ``adaptvc.tensors``, which never see the repository itself.

>>> repo = Repository.init("run1")                 # doctest: +SKIP
>>> model.save_pretrained("run1")                  # doctest: +SKIP
>>> c = repo.commit("epoch 1")                     # doctest: +SKIP
>>> repo.tag("v1")                                 # doctest: +SKIP
>>> repo.checkout("v1", "serve/")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    AdaptvcError,
    AdaptvcWarning,
    NotARepositoryError,
    NothingToCommitError,
    NoWorkTreeError,
    RefExistsError,
    RefNotFoundError,
    RemoteNotFoundError,
    RepositoryExistsError,
    UnsupportedFormatError,
    WouldOverwriteError,
)
from .hashing import HASH_NAME, is_object_id
from .objects import BasePin, Commit, Snapshot
from .ops.capture import build_snapshot, capture_bytes, find_adapter_files, read_config
from .ops.ignore import exclude_checkout_dir, ignore_for
from .ops.record import Target, check_inputs, head_target, record
from .ops.revisions import resolve_revision
from .ops.status import Status, config_changes
from .ops.worktree import WorkTree
from .parsing import JsonError, parse_json
from .peft_layout import CONFIG_NAME, is_config_path, is_training_state
from .progress import SILENT, Progress
from .refnames import HEADS, REMOTES, TAGS, check_ref_name
from .storage.atomic import read_file, write_atomic
from .storage.base import MAX_METADATA_OBJECT
from .storage.disk_objects import STORE_FORMAT, STORE_FORMATS, DiskObjectStore
from .storage.disk_refs import DiskRefs

if TYPE_CHECKING:  # imported where they are used: a command pays only for what it needs (start-up time)
    from . import sync
    from .ops.fsck import FsckReport
    from .ops.gc import GcReport
    from .ops.merge import MergeResult
    from .ops.reflog_expire import ExpireReport
    from .ops.remote_fsck import RemoteFsckReport
    from .ops.reset import ResetResult
    from .ops.restore import RestoreResult
    from .ops.show import TensorStats
    from .ops.tracking import Tracking
    from .serving.deploy import DeployedReport, DeployResult
    from .serving.export import ExportResult
    from .sync import SyncResult
    from .tensors.diff import Diff
    from .tensors.reader import TensorReader

ADMIN_DIR = ".adaptvc"
DEFAULT_BRANCH = "main"
STORE_LAYOUT = ("objects", "tmp", "refs/heads", "refs/tags", "logs")


@dataclass(frozen=True)
class Version:
    """A commit together with the snapshot it points at (what ``show`` prints)."""

    commit: Commit
    snapshot: Snapshot

    def to_json(self) -> dict[str, Any]:
        return {**self.commit.to_json(), **self.snapshot.to_json()}


def _safetensors_bytes(tensors: Mapping[str, Any]) -> bytes:
    """numpy arrays as the bytes of a safetensors file (PEFT's metadata), without torch."""
    import numpy as np
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"format": "pt"})


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
            raw = read_file(self.admin_dir, "config.json", 1 << 20)
            self.config: dict[str, Any] = parse_json(raw or b"")
        except (OSError, ValueError, JsonError) as e:
            raise UnsupportedFormatError(f"{self.admin_dir / 'config.json'} is unreadable: {e}") from None
        if not isinstance(self.config, dict) or self.config.get("format") not in STORE_FORMATS:
            found = self.config.get("format") if isinstance(self.config, dict) else None
            raise UnsupportedFormatError(
                f"{self.admin_dir} uses repository format {found!r}; this adaptvc reads formats "
                f"{', '.join(map(str, STORE_FORMATS))}: upgrade adaptvc"
            )
        self.store = DiskObjectStore(self.admin_dir, packed=self.config["format"] >= 2, cache_commits=True)
        self.refs = DiskRefs(self.admin_dir)
        self.worktree = WorkTree(self.work_tree, self.admin_dir, self.store, bool(self.config.get("allow_pickle")))

    @property
    def has_work_tree(self) -> bool:
        """False for a repository whose versions come only from other folders or live models (what the
        Trainer callback creates): it has history but no adapter folder of its own."""
        return self.config.get("work_tree", True) is not False

    @property
    def _worktree(self) -> WorkTree | None:
        """The work tree merge, revert and reset update; None in a repository without one."""
        return self.worktree if self.has_work_tree else None

    def _needs_work_tree(self, what: str) -> None:
        if not self.has_work_tree:
            raise NoWorkTreeError(what)

    # -- creating -------------------------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", *, base: str | None = None,
             base_revision: str | None = None, branch: str = DEFAULT_BRANCH, work_tree: bool = True) -> Repository:
        """Create ``path/.adaptvc`` (``path`` is created if needed) and return the repository.

        ``base``/``base_revision`` pin a default base model for every commit (overriding what the
        adapter's config says). ``work_tree=False`` makes a repository that only records versions made
        elsewhere (``commit --from``, a live model, the Trainer callback): no adapter folder of its own, so
        ``status`` and ``switch`` never report or touch files there."""
        root = Path(path)
        admin = root / ADMIN_DIR
        if admin.exists() or admin.is_symlink():
            raise RepositoryExistsError(str(admin.resolve()))
        check_ref_name(branch, "branch name")
        root.mkdir(parents=True, exist_ok=True)
        # build in a temporary folder, then rename: a half-initialised repository never exists
        tmp = root / f"{ADMIN_DIR}.init-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            tmp.mkdir()
            for sub in STORE_LAYOUT:
                (tmp / sub).mkdir(parents=True)
            config: dict[str, Any] = {"format": STORE_FORMAT, "hash": HASH_NAME, "remotes": {}}
            if base or base_revision:
                config["base"] = {"name_or_path": base, "revision": base_revision}
            if not work_tree:
                config["work_tree"] = False
            write_atomic(tmp, "config.json", json.dumps(config, indent=2, sort_keys=True).encode() + b"\n")
            DiskRefs(tmp).init_head(HEADS + branch)
            os.rename(tmp, admin)
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            if admin.exists():
                raise RepositoryExistsError(str(admin.resolve())) from None
            raise
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
    @property
    def fingerprint_cache(self) -> Path:
        return self.admin_dir / "cache" / "base-fingerprints.json"

    def _base_pin(self, source: Path | None, snapshot: Snapshot, base: str | None,
                  base_revision: str | None) -> BasePin:
        """The base-model pin of a new commit: ``--base``/``--base-revision`` of the commit, else of the
        repository (``init --base``), else the adapter config's ``base_model_name_or_path``/``revision``.
        A local path in the config is kept beside a portable name, and fingerprints the base when it is at
        hand."""
        config_path = next((f.path for f in snapshot.files if is_config_path(f.path)), CONFIG_NAME)
        cfg = read_config(source, config_path) if source is not None else self.config_at(snapshot, config_path)
        default = self.config.get("base") if isinstance(self.config.get("base"), dict) else {}
        cfg_name = cfg.get("base_model_name_or_path") if isinstance(cfg.get("base_model_name_or_path"), str) else None
        cfg_rev = cfg.get("revision") if isinstance(cfg.get("revision"), str) else None
        name = base or default.get("name_or_path") or cfg_name or None
        from_config = not (base or default.get("name_or_path"))
        revision = base_revision or default.get("revision") or (cfg_rev if from_config else None)
        local = cfg_name if cfg_name and cfg_name != name and Path(cfg_name).expanduser().is_dir() else None
        fingerprint = None
        from .hfcache import resolve_base_folder

        if resolve_base_folder(local or name, revision) is not None:  # the base is at hand: fingerprint it
            from .basemodel import pin_fingerprint

            fingerprint = pin_fingerprint(snapshot, local or name, revision, self.fingerprint_cache, cfg)
        return BasePin(name if isinstance(name, str) else None, revision if isinstance(revision, str) else None,
                       fingerprint, local)

    def verify_base(self, rev: str, base: str | Any, *, subfolder: str | None = None) -> str:
        """Check ``base`` (a folder, a Hub name in the local cache, or a live model) against version ``rev``'s
        pin and its adapter's modules; raise :class:`~adaptvc.basemodel.BaseMismatchError` naming what
        differs. Returns a short description of what was checked."""
        from .basemodel import pinned_folder, target_modules, verify_folder_base, verify_live_base

        version = self.show(rev)
        folder = (subfolder or "").strip("/")
        config = self.config_at(version.snapshot, f"{folder}/{CONFIG_NAME}" if folder else CONFIG_NAME)
        first = pinned_folder(version.snapshot)
        pinned_config = self.config_at(version.snapshot, f"{first}/{CONFIG_NAME}" if first else CONFIG_NAME)
        if isinstance(base, (str, os.PathLike)):
            verify_folder_base(version.snapshot, version.commit.base, str(base), folder, self.fingerprint_cache,
                               config, pinned_config)
        else:
            verify_live_base(version.snapshot, version.commit.base, base, folder, config, pinned_config)
        n = len(target_modules(version.snapshot, folder, config))
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
        from .live import is_live_model, saved_model
        from .provenance.code import code_provenance, default_author

        if source is not None and is_live_model(source):
            with saved_model(source, self.admin_dir / "tmp", adapter_name) as folder:
                return self.commit(message, folder, base=base, base_revision=base_revision, metadata=metadata,
                                   author=author, allow_empty=allow_empty, progress=progress,
                                   with_training_state=with_training_state)
        if source is None:
            self._needs_work_tree("commit a folder with --from DIR (or a live model)")
        src = Path(source) if source is not None else self.work_tree
        author = author if author is not None else default_author(src)
        allow_pickle = allow_pickle or self.worktree.allow_pickle
        check_inputs(message, author, metadata)
        target = head_target(self.refs)
        parent = target.expected
        try:
            files = find_adapter_files(src, allow_pickle=allow_pickle, with_training_state=with_training_state,
                                       ignore=ignore_for(src, self.work_tree, self.admin_dir))
            snapshot = build_snapshot(files, self.store, progress, self.worktree.stat_cache(src))
            if parent and not allow_empty and self._same_meaning(self.store.read_commit(parent).snapshot, snapshot):
                raise NothingToCommitError(parent)
            pin = self._base_pin(src, snapshot, base, base_revision)
        except BaseException:
            self.store.end_session()
            raise
        commit = record(self.store, self.refs, snapshot, parents=(parent,) if parent else (), message=message,
                        author=author, target=target, base=pin, provenance=code_provenance(src),
                        metadata=metadata)
        if allow_pickle and not self.config.get("allow_pickle") and \
                any((src / p).is_file() for p in ("adapter_model.bin",)):
            self.config["allow_pickle"] = True  # consent remembered: status and diff may convert it too
            self._write_config()
        return commit

    def _same_meaning(self, old_id: str, new: Snapshot) -> bool:
        """True when ``new`` holds what snapshot ``old_id`` holds: the same bytes, except configs that differ
        only in formatting or in the order of a set-valued key."""
        if old_id == new.id:
            return True
        old = self.store.read_snapshot(old_id)
        if [f.path for f in old.files] != [f.path for f in new.files]:
            return False
        for a, b in zip(old.files, new.files, strict=True):
            if a.hash == b.hash:
                continue
            if not is_config_path(a.path) or config_changes(self.config_at(old, a.path), self.config_at(new, b.path)):
                return False
        return True

    def record(self, message: str, files: Mapping[str, bytes | Mapping[str, Any]] | None = None, *,
               snapshot: Snapshot | None = None, parents: Sequence[str] | None = None, branch: str | None = None,
               base: BasePin | None = None, metadata: dict[str, Any] | None = None, author: str | None = None,
               progress: Progress = SILENT) -> Commit:
        """Record a version built in memory, with any number of parents (what a merge does).

        ``files`` maps snapshot paths to bytes, or to ``{tensor name: numpy array}`` for a safetensors file
        (written as PEFT writes it); or pass a ``snapshot`` whose blobs are already stored. ``parents`` are
        revisions (default: HEAD). The commit goes on ``branch`` (default: the current branch, or a detached
        HEAD), which must still be where it was when the parents were chosen (compare-and-swap).

        >>> repo.record("merged", {"adapter_config.json": cfg_bytes,            # doctest: +SKIP
        ...                        "adapter_model.safetensors": {"...lora_A.weight": a, ...}},
        ...             parents=["main", "chat"])
        """
        if (files is None) == (snapshot is None):
            raise AdaptvcError("give either files or a snapshot to record")
        from .provenance.code import default_author

        author = author if author is not None else default_author(self.work_tree)
        check_inputs(message, author, metadata)
        if branch is not None:
            check_ref_name(branch, "branch name")
            target = Target(HEADS + branch, self.refs.read(HEADS + branch))
        else:
            target = head_target(self.refs)
        if parents is None:
            chosen = [target.expected] if target.expected else []
        else:
            chosen = [self.resolve(p) for p in parents]
        try:
            if files is not None:
                raw = {path: data if isinstance(data, (bytes, bytearray)) else _safetensors_bytes(data)
                       for path, data in files.items()}
                snapshot = capture_bytes(raw, self.store, progress)
            assert snapshot is not None
            if base is None and chosen:
                base = self.store.read_commit(chosen[0]).base
        except BaseException:
            self.store.end_session()
            raise
        return record(self.store, self.refs, snapshot, parents=chosen, message=message, author=author,
                      target=target, base=base, metadata=metadata)

    def load(self, model: Any, rev: str = "HEAD", *, adapter_name: str = "default", is_trainable: bool = False,
             subfolder: str | None = None, force: bool = False) -> Any:
        """Version ``rev`` as a ``PeftModel`` on ``model`` (a base model, or a PeftModel to add it to as
        ``adapter_name``), built straight from the store. Refuses a base that does not match the version's
        base-model pin unless ``force``. Needs the torch extra."""
        version = self.show(rev)
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        config = self.config_at(version.snapshot, prefix + CONFIG_NAME)
        from .live import load_into

        return load_into(self.store, version.commit, version.snapshot, config, model, adapter_name=adapter_name,
                         is_trainable=is_trainable, subfolder=subfolder, force=force)

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
        from .ops import graph

        commits = list(graph.walk(self.store, [start], max_count))
        self.store.save_caches()
        return commits

    # -- comparing ------------------------------------------------------------------------------------------
    def worktree_snapshot(self, source: str | os.PathLike[str] | None = None) -> Snapshot:
        """A snapshot of ``source`` (default: the work tree), hashed but not stored; empty without an adapter."""
        return self.worktree.snapshot(Path(source) if source is not None else None)

    def status(self, source: str | os.PathLike[str] | None = None) -> Status:
        """How the work tree (or ``source``) differs from HEAD, by tensor, config key and file."""
        head = self.head()
        if source is None and not self.has_work_tree:
            return Status(head, note="this repository has no work tree: its versions come from checkpoints or "
                                     "live models; see one with 'adaptvc checkout REV -o DIR'")
        old = self.store.read_snapshot(self.store.read_commit(head).snapshot) if head else None
        return self.worktree.status(head, old, Path(source) if source is not None else None,
                                    config_of=self.config_at)

    def status_json(self) -> dict[str, Any]:
        """What ``status --json`` prints (and the web UI serves): the status, and where the branch stands
        against its upstream."""
        tracking = self.tracking()
        return {**self.status().to_dict(), "upstream": tracking.to_json() if tracking else None}

    def config_at(self, snapshot: Snapshot, path: str = CONFIG_NAME) -> dict[str, Any]:
        """The adapter config stored at ``path`` in ``snapshot`` ({} when absent)."""
        entry = snapshot.file(path)
        if entry is None:
            return {}
        try:
            data = parse_json(self.store.read(entry.hash, MAX_METADATA_OBJECT))
        except JsonError:
            return {}
        return data if isinstance(data, dict) else {}

    def tensor_reader(self, rev: str | None) -> TensorReader:
        """The tensors of version ``rev``, or of the work tree when ``rev`` is None."""
        from .tensors.reader import WORKTREE, TensorReader, folder_configs

        if rev is None:
            self._needs_work_tree("name two versions: adaptvc diff A B")
            snap = self.worktree_snapshot()
            configs = folder_configs(snap, lambda p: read_config(self.work_tree, p))
            return TensorReader(WORKTREE, snap, self.store, self.work_tree, configs)
        commit = self.read_commit(rev)
        snap = self.store.read_snapshot(commit.snapshot)
        return TensorReader(commit.id, snap, self.store, None, folder_configs(snap, lambda p: self.config_at(snap, p)))

    def diff(self, a: str | None = "HEAD", b: str | None = None, *, tensors: str | None = None,
             progress: Progress = SILENT) -> Diff:
        """Compare version ``a`` with version ``b`` (None: the work tree), per tensor, per LoRA module and in
        the config. ``tensors`` is a glob limiting the tensor names (matched anywhere in the name)."""
        from .tensors.diff import diff_versions

        return diff_versions(self.tensor_reader(a), self.tensor_reader(b), tensors, progress)

    # -- checking out ---------------------------------------------------------------------------------------
    def _head_snapshot(self) -> Snapshot | None:
        head = self.head()
        return self.store.read_snapshot(self.store.read_commit(head).snapshot) if head else None

    def checkout(self, rev: str, out_dir: str | os.PathLike[str] | None = None, *, force: bool = False,
                 with_training_state: bool = False, progress: Progress = SILENT) -> Commit:
        """Write version ``rev`` in standard PEFT layout.

        With ``out_dir``, into that folder: files a previous checkout wrote there are replaced (changed ones
        only with ``force``) and the previous version's files this one lacks are removed; a file adaptvc did
        not write is never replaced. HEAD does not move. Without it, into the work tree: uncommitted changes
        are refused unless ``force``, untracked files are never overwritten, and HEAD moves to ``rev`` (onto
        the branch when ``rev`` names one, else detached). Training state kept with the version is written
        only with ``with_training_state`` (then ``trainer.train(resume_from_checkpoint=out_dir)`` resumes)."""
        oid = self.resolve(rev)
        commit = self.store.read_commit(oid)
        snapshot = self.store.read_snapshot(commit.snapshot)
        if not with_training_state:
            snapshot = snapshot.without(is_training_state)
        if out_dir is not None:
            out = Path(out_dir)
            resolved = out.resolve()
            if resolved == self.admin_dir or self.admin_dir in resolved.parents:
                raise WouldOverwriteError([str(out)], f"that is inside the store ({ADMIN_DIR}); choose another "
                                                      "folder")
            excluded = exclude_checkout_dir(self.work_tree, self.admin_dir, out)
            if excluded is not None:  # else the next commit would capture it as a sub-adapter
                warnings.warn(f"{out} is inside the work tree: added {excluded} to {ADMIN_DIR}/info/exclude so "
                              "commits leave it out", AdaptvcWarning, stacklevel=2)
            from .ops.materialise import checkout_into

            checkout_into(self.store, snapshot, out, commit.id, force, progress, self.admin_dir / "checkouts")
            return commit
        self._needs_work_tree(f"write the version into a folder with 'adaptvc checkout {rev} -o DIR'")
        self.worktree.update(self._head_snapshot(), snapshot, force, self.head(), progress, self.config_at)
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
        if oid != self.head() and self.has_work_tree:
            self.worktree.update(self._head_snapshot(), self.show(oid).snapshot, force, self.head(), progress,
                                 self.config_at)
        self.refs.set_head(HEADS + branch, f"switch: moving to {branch}")

    def resume(self, rev: str, out_dir: str | os.PathLike[str], *, branch: str | None = None,
               progress: Progress = SILENT) -> tuple[str, Commit]:
        """Get ready to resume training from version ``rev``: write it with its training state into ``out_dir``
        (``trainer.train(resume_from_checkpoint=out_dir)``) and put HEAD on a new branch at ``rev``, so the
        commits of the resumed run stack on ``rev`` instead of on the newest version. Returns (branch, commit)."""
        oid = self.resolve(rev)
        name = branch or f"resume-{rev if self._branch_named(rev) is None and not is_object_id(rev) else oid[:8]}"
        name = name.replace("~", "-").replace("^", "-")
        check_ref_name(name, "branch name")
        commit = self.checkout(oid, out_dir, with_training_state=True, progress=progress)
        self.branch(name, oid)
        if self.has_work_tree:
            self.switch(name, progress=progress)
        else:
            self.refs.set_head(HEADS + name, f"resume: from {rev}")
        return name, commit

    # -- remotes --------------------------------------------------------------------------------------------
    def remotes(self) -> dict[str, str]:
        """``{name: url}`` of the configured remotes."""
        remotes = self.config.get("remotes") or {}
        if not isinstance(remotes, dict):
            return {}
        return {k: v["url"] for k, v in sorted(remotes.items())
                if isinstance(v, dict) and isinstance(v.get("url"), str)}

    def _write_config(self) -> None:
        write_atomic(self.admin_dir, "config.json", json.dumps(self.config, indent=2, sort_keys=True).encode() + b"\n")

    def add_remote(self, name: str, url: str) -> None:
        check_ref_name(name, "remote name")
        if "/" in name:
            raise AdaptvcError(f"invalid remote name {name!r}: no '/'")
        if name in self.remotes():
            raise RefExistsError(f"remote {name!r}", f" ({self.remotes()[name]}); remove it first")
        from .remotes import open_remote

        open_remote(url, name)  # refuses URLs no remote type understands
        if not isinstance(self.config.get("remotes"), dict):
            self.config["remotes"] = {}
        self.config["remotes"][name] = {"url": url}
        self._write_config()

    def remove_remote(self, name: str) -> None:
        if name not in self.remotes():
            raise RemoteNotFoundError(name)
        del self.config["remotes"][name]
        self._write_config()
        for branch in self.refs.list(f"{REMOTES}{name}/"):
            ref = f"{REMOTES}{name}/{branch}"
            self.refs.set_if_equals(ref, self.refs.read(ref), None, f"remote remove {name}")
        for ref in self.refs.reflog_refs():
            if ref.startswith(f"{REMOTES}{name}/"):
                self.refs.delete_reflog(ref)

    def _choose(self, remote: str | None) -> sync.RemoteChoice:
        from . import sync

        return sync.choose_remote(self.remotes(), remote, self.store)

    def push(self, remote: str | None = None, branches: list[str] | None = None, *, tags: bool = False,
             private: bool = False, progress: Progress = SILENT) -> SyncResult:
        """Send the current branch (or ``branches``), and with ``tags`` every tag, to ``remote``; only a
        fast-forward is accepted (else "run adaptvc pull")."""
        if branches is None:
            current = self.current_branch()
            if current is None:
                raise AdaptvcError("HEAD is detached: name the branch to push (adaptvc push origin BRANCH)")
            branches = [current]
        for b in branches:
            check_ref_name(b, "branch name")
        from . import sync

        return sync.push(self.store, self.refs, self._choose(remote), branches, tags, private, progress)

    def fetch(self, remote: str | None = None, progress: Progress = SILENT) -> SyncResult:
        """Bring what the local store lacks from ``remote``; update ``refs/remotes/<remote>/…`` and new tags."""
        from . import sync

        return sync.fetch(self.store, self.refs, self._choose(remote), progress)

    def pull(self, remote: str | None = None, *, force: bool = False, progress: Progress = SILENT) -> SyncResult:
        """Fetch, then fast-forward the current branch and the work tree; a diverged branch is refused."""
        from . import sync

        choice = self._choose(remote)
        result = sync.fetch(self.store, self.refs, choice, progress)
        branch = self.current_branch()
        if branch is None:
            raise AdaptvcError("HEAD is detached: switch to a branch before pulling")
        theirs = self.refs.read(f"{REMOTES}{choice.name}/{branch}") if choice.name else \
            result.remote_refs.get(HEADS + branch)
        if theirs is None:
            result.message = f"{choice.label} has no branch {branch!r}; fetched only"
            return result
        ours = self.head()
        if not sync.fast_forward_target(self.store, ours, theirs, branch, choice.label):
            result.message = "already up to date"
            return result
        if self.has_work_tree:
            self.worktree.update(self._head_snapshot(), self.show(theirs).snapshot, force, ours, progress,
                                 self.config_at)
        self.refs.set_if_equals(HEADS + branch, ours, theirs, f"pull: fast-forward from {choice.label}")
        result.updated[HEADS + branch] = (ours, theirs)
        result.message = f"fast-forwarded {branch} to {theirs[:12]}"
        return result

    @classmethod
    def clone(cls, url: str, directory: str | os.PathLike[str] | None = None, *, revision: str | None = None,
              progress: Progress = SILENT) -> Repository:
        """A new repository in ``directory`` with every version of ``url`` and its default branch checked out
        (or ``revision``). The store is built in a temporary folder beside the target and renamed into place
        only when complete: a failed clone leaves nothing behind, and a second try starts clean."""
        from .remotes import open_remote
        from .remotes.registry import default_clone_folder

        remote = open_remote(url, "origin")
        if not remote.exists():
            raise AdaptvcError(f"nothing to clone at {url}{remote.missing_hint()}")
        target = Path(directory) if directory is not None else Path(default_clone_folder(url))
        existed = target.exists() or target.is_symlink()
        if existed and (not target.is_dir() or target.is_symlink() or any(target.iterdir())):
            raise AdaptvcError(f"{target} exists and is not empty; choose another folder")
        parent = target.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{target.name}.adaptvc-clone-{os.getpid()}-{os.urandom(4).hex()}"
        branch = remote.default_branch() or DEFAULT_BRANCH
        check_ref_name(branch, "branch name")
        try:
            staging = cls.init(tmp, branch=branch)
            staging.add_remote("origin", url)
            fetched = staging.fetch("origin", progress)
            theirs = staging.refs.read(f"{REMOTES}origin/{branch}")
            if theirs is None and HEADS + branch in fetched.skipped:
                raise AdaptvcError(f"{url}: its branch {branch!r} cannot be read; nothing was cloned")
            if theirs is None and revision is None and not staging.tags():
                raise AdaptvcError(f"{url} holds no adapter versions; nothing to clone")
            if theirs is not None:
                staging.refs.set_if_equals(HEADS + branch, None, theirs, f"clone: from {url}")
                from .sync import carried_base

                pin = carried_base(staging.store, theirs)  # init --base of the origin: its commits' pin
                if pin is not None:
                    staging.config["base"] = pin
                    staging._write_config()
            os.rename(tmp, target)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            repo = cls(target, discover=False)
            if theirs is not None or revision is not None:
                repo.checkout(revision or branch, force=True, progress=progress)
        except BaseException:
            import shutil

            if existed:
                for child in list(target.iterdir()):
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            else:
                shutil.rmtree(target, ignore_errors=True)
            raise
        return repo

    # -- serving --------------------------------------------------------------------------------------------
    def export(self, rev: str, dest: str | os.PathLike[str], *, name: str | None = None,
               served_base: str | None = None, force: bool = False, progress: Progress = SILENT) -> ExportResult:
        """Write version ``rev`` as ``dest/<name>@<id>/`` (a folder, or ``s3://bucket/prefix``): complete,
        verified, never reused for other bytes. See docs/serving.md."""
        from .serving.export import export_to_bucket, export_to_folder, is_bucket_url

        name = name if name is not None else self.work_tree.name
        commit = self.read_commit(rev)
        if is_bucket_url(str(dest)):
            return export_to_bucket(self.store, commit, str(dest), name, served_base=served_base, force=force,
                                    cache_file=self.fingerprint_cache, progress=progress)
        return export_to_folder(self.store, commit, Path(dest), name, served_base=served_base, force=force,
                                cache_file=self.fingerprint_cache, progress=progress)

    def deploy(self, rev: str, directory: str | os.PathLike[str], name: str, *, keep: int | None = None,
               served_base: str | None = None, force: bool = False, progress: Progress = SILENT) -> DeployResult:
        """Export ``rev`` to ``directory/<name>@<id>/`` and switch the link ``directory/<name>`` to it in one
        atomic rename; with ``keep``, older versions of that name beyond ``keep`` are removed."""
        from .serving.deploy import deploy

        return deploy(self.store, self.read_commit(rev), directory, name, keep=keep, served_base=served_base,
                      force=force, cache_file=self.fingerprint_cache, progress=progress)

    def deployed(self, directory: str | os.PathLike[str]) -> DeployedReport:
        """Which name points at which version in ``directory``, and whether each folder is intact."""
        from .serving.deploy import deployed

        return deployed(directory, self.store)

    # -- maintenance ----------------------------------------------------------------------------------------
    @property
    def store_format(self) -> int:
        return int(self.config["format"])

    def upgrade(self, progress: Progress = SILENT) -> dict[str, Any]:
        """Move a format-1 store (one file per object) to format 2 (packs): every object is verified and
        written into one pack, the loose files go, then the config says format 2. Safe to interrupt: objects
        are readable from either place until the last step, and running it again finishes the job."""
        before = self.store_format
        if before >= STORE_FORMAT:
            return {"from": before, "to": before, "objects": 0}
        packed = DiskObjectStore(self.admin_dir, packed=True)
        ids = [oid for oid in packed.iter_ids()]
        packed.repack(set(ids), cutoff=float("inf"), progress=progress)
        self.config["format"] = STORE_FORMAT
        self._write_config()
        self.store = packed
        self.worktree.store = packed
        return {"from": before, "to": STORE_FORMAT, "objects": len(ids)}

    def fsck_remote(self, remote: str | None = None, progress: Progress = SILENT) -> RemoteFsckReport:
        """Is the remote whole? Every object its branches and tags reach: present, and re-hashed."""
        from .ops.remote_fsck import fsck_remote_store

        choice = self._choose(remote)
        r = choice.remote
        if hasattr(r, "fsck"):
            return r.fsck(progress)
        store = getattr(r, "store", None)
        if store is None:
            raise AdaptvcError(f"{choice.label}: fsck --remote needs a folder, s3:// or az:// remote")
        refs = r.list_refs()
        return fsck_remote_store(store, refs, [*r.skipped_refs, *r.unreadable_refs], progress, workers=1,
                                 location=r.url)

    def fsck(self, progress: Progress = SILENT) -> FsckReport:
        """Re-hash every object and check that everything the history refers to exists."""
        from .ops.fsck import fsck

        return fsck(self.store, self.refs, progress)

    def gc(self, grace_seconds: float | None = None, dry_run: bool = False, *, aggressive: bool = False,
           progress: Progress = SILENT) -> GcReport:
        """Delete objects no ref, tag or reflog entry reaches and that are older than ``grace_seconds`` (default:
        an hour); with ``aggressive``, also compress the tensors that remain (lossless, byte-grouped zstd)."""
        from .ops.gc import DEFAULT_GRACE_SECONDS, gc

        grace = DEFAULT_GRACE_SECONDS if grace_seconds is None else grace_seconds
        return gc(self.store, self.refs, grace, dry_run, aggressive, progress)

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

    # -- merging and rewinding (issue 14) ---------------------------------------------------------------------
    def merge(self, rev: str, message: str | None = None, *, strategy: str = "combine", ours: Sequence[str] = (),
              theirs: Sequence[str] = (), rank: int | None = None, weights: tuple[float, float] | None = None,
              density: float | None = None, seed: int | None = None, ff: bool = True, ff_only: bool = False,
              allow_unrelated: bool = False, author: str | None = None, progress: Progress = SILENT) -> MergeResult:
        """Merge version ``rev`` into the current branch, three-way against the merge base (exact for LoRA:
        see docs/merge.md). Returns what was done; ``.to_json()`` is ``merge --json``. Raises
        MergeConflictError (``.result.conflicts``) or MergeError before anything is written."""
        from .ops.merge import MergeOptions, merge

        options = MergeOptions(strategy, tuple(ours), tuple(theirs), rank, weights, density, seed)
        return merge(self.store, self.refs, self._worktree, rev, self.resolve(rev), message=message,
                     author=author if author is not None else _author(self.work_tree), options=options,
                     ff=ff, ff_only=ff_only, allow_unrelated=allow_unrelated, progress=progress)

    def merge_base(self, a: str, b: str = "HEAD", *, all_bases: bool = False) -> list[str]:
        """The best common ancestor of ``a`` and ``b`` (every one with ``all_bases``); [] when unrelated."""
        from .ops.merge import merge_base

        return merge_base(self.store, self.resolve(a), self.resolve(b), all_bases)

    def revert(self, rev: str, message: str | None = None, *, mainline: int | None = None,
               strategy: str = "combine", ours: Sequence[str] = (), theirs: Sequence[str] = (),
               rank: int | None = None, author: str | None = None, progress: Progress = SILENT) -> MergeResult:
        """Record a commit that undoes what ``rev`` changed (a merge commit needs ``mainline``)."""
        from .ops.merge import MergeOptions
        from .ops.revert import revert

        return revert(self.store, self.refs, self._worktree, rev, self.resolve(rev),
                      author=author if author is not None else _author(self.work_tree), message=message,
                      mainline=mainline, options=MergeOptions(strategy, tuple(ours), tuple(theirs), rank),
                      progress=progress)

    def reset(self, rev: str = "HEAD", mode: str = "mixed", *, progress: Progress = SILENT) -> ResetResult:
        """Move the current branch (or detached HEAD) to ``rev``; ``mode="hard"`` also rewrites the tracked
        files of the work tree (untracked files are never touched)."""
        from .ops.reset import reset

        return reset(self.store, self.refs, self._worktree, rev, self.resolve(rev), mode, progress)

    def restore(self, paths: Sequence[str] = (), *, source: str = "HEAD", tensors: Sequence[str] = (),
                progress: Progress = SILENT) -> RestoreResult:
        """Write files (paths or globs of the work tree) or tensors (globs over tensor names) of version
        ``source`` into the work tree; other tensors keep their bytes. HEAD does not move."""
        from .ops.restore import restore

        self._needs_work_tree(f"write files of a version into a folder with 'adaptvc checkout {source} -o DIR'")
        oid = self.resolve(source)
        return restore(self.store, self.work_tree, oid, self.show(oid).snapshot, self._head_snapshot(), list(paths),
                       list(tensors), label=source, progress=progress)

    def expire_reflog(self, refs: Sequence[str] | None = None, *, expire: str | None = None,
                      expire_unreachable: str | None = None, dry_run: bool = False) -> ExpireReport:
        """git's ``reflog expire`` for ``refs`` (None: every reflog). ``expire`` / ``expire_unreachable`` are
        WHENs (``"now"``, ``"never"``, ``"30d"``, ``"2.weeks.ago"``, a date); None: git's 90 / 30 days."""
        import time

        from .ops.reflog_expire import expire_reflogs, full_ref_name, parse_when

        now = time.time()
        return expire_reflogs(self.store, self.refs,
                              None if refs is None else [full_ref_name(self.refs, r) for r in refs],
                              expire=parse_when(expire, now) if expire is not None else None,
                              expire_unreachable=parse_when(expire_unreachable, now)
                              if expire_unreachable is not None else None, now=now, dry_run=dry_run)

    def file_bytes(self, rev: str, path: str) -> bytes:
        """The bytes of file ``path`` of version ``rev``, as committed (``show REV:PATH``)."""
        from .ops.show import file_chunks

        return b"".join(bytes(c) for c in file_chunks(self.store, self.show(rev).snapshot, path, rev))

    def tensor_stats(self, rev: str, name: str) -> list[TensorStats]:
        """dtype, shape, hash and min/max/mean/std/norm of tensor ``name`` of ``rev`` (a glob: every match)."""
        from .ops.show import select_tensors, tensor_stats

        return [tensor_stats(self.store, n, t) for n, t in select_tensors(self.show(rev).snapshot, name, rev)]

    def ls_remote(self, remote: str | None = None) -> dict[str, str]:
        """``{ref: commit id}`` of the branches and tags ``remote`` holds now."""
        return self._choose(remote).remote.list_refs()

    def tracking(self) -> Tracking | None:
        """How the current branch stands against ``origin/<branch>`` (ahead, behind); None without one."""
        from .ops.tracking import tracking

        return tracking(self.store, self.refs, self.current_branch(), list(self.remotes()))


def load(model: Any, repository: str | os.PathLike[str] = ".", rev: str = "HEAD", **kwargs: Any) -> Any:
    """``adaptvc.load(base_model, "path/to/repo", rev="v3")``: see :meth:`Repository.load`."""
    return Repository(repository).load(model, rev, **kwargs)


def _author(path: Path) -> str:
    from .provenance.code import default_author

    return default_author(path)
