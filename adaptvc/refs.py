"""Refs: branches, tags and HEAD, moved only by compare-and-swap under a lock file, with a reflog.

Layout (like git): ``HEAD`` holds ``ref: refs/heads/main`` or a commit id; ``refs/heads/<branch>`` and
``refs/tags/<tag>`` hold one commit id each; ``logs/<ref>`` holds one JSON line per move.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import fsync_dir
from .errors import CorruptObjectError, InvalidRefNameError, RefLockedError, RefMovedError
from .hashing import is_object_id

HEADS = "refs/heads/"
TAGS = "refs/tags/"
REMOTES = "refs/remotes/"  # refs/remotes/<remote>/<branch>: where a remote's branches were at the last fetch
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_ref_name(name: str, kind: str = "name") -> str:
    """Refuse names git would refuse (``git check-ref-format``), plus names that read as ids or options."""
    def bad(reason: str) -> InvalidRefNameError:
        return InvalidRefNameError(name, f"a {kind} {reason}")

    if not isinstance(name, str) or not name:
        raise bad("cannot be empty")
    if len(name.encode()) > 200:
        raise bad("is limited to 200 bytes")
    if _BAD_CHARS.search(name):
        raise bad("cannot contain spaces, control characters or any of ~ ^ : ? * [ \\")
    if ".." in name or "@{" in name or name == "@":
        raise bad("cannot contain '..' or '@{', or be '@'")
    if name.startswith(("/", "-")) or name.endswith(("/", ".")) or "//" in name:
        raise bad("cannot start with '/' or '-', end with '/' or '.', or contain '//'")
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            raise bad("component cannot start with '.' or end with '.lock'")
    if name == "HEAD" or is_object_id(name):
        raise bad("cannot be HEAD or look like a full commit id")
    return name


@dataclass(frozen=True)
class LockInfo:
    """Who holds a ref lock: written into the lock file when it is taken."""

    path: Path
    pid: int | None
    host: str | None
    time: float | None

    #: a lock older than this whose owner cannot be checked (another host) is taken to be stale
    MAX_AGE = 600.0

    @classmethod
    def read(cls, path: Path) -> LockInfo | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid, host, when = data.get("pid"), data.get("host"), data.get("time")
        return cls(path, pid if isinstance(pid, int) else None, host if isinstance(host, str) else None,
                   float(when) if isinstance(when, (int, float)) else None)

    @property
    def stale(self) -> bool:
        if self.pid is not None and self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
        try:
            age = time.time() - (self.time if self.time is not None else self.path.stat().st_mtime)
        except FileNotFoundError:
            return False
        return age > self.MAX_AGE


@dataclass(frozen=True)
class ReflogEntry:
    ref: str
    old: str | None
    new: str | None
    time: float
    message: str


class Refs:
    #: seconds to wait for another process's lock on a ref before reporting it as locked
    lock_timeout = 3.0

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, ref: str) -> Path:
        if ref != "HEAD":
            prefix = next((p for p in (HEADS, TAGS, REMOTES) if ref.startswith(p)), None)
            if prefix is None:
                raise InvalidRefNameError(ref, "refs live under refs/heads/, refs/tags/ or refs/remotes/")
            check_ref_name(ref[len(prefix):])
            if prefix == REMOTES and "/" not in ref[len(prefix):]:
                raise InvalidRefNameError(ref, "a remote-tracking ref is refs/remotes/<remote>/<branch>")
        return self.root.joinpath(*ref.split("/"))

    # -- reading --------------------------------------------------------------------------------------------
    def _read_raw(self, ref: str) -> str | None:
        p = self._path(ref)
        try:
            if p.is_symlink():
                raise CorruptObjectError(ref, "the ref file is a symbolic link")
            text = p.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except UnicodeDecodeError:
            raise CorruptObjectError(ref, "the ref file is not text") from None
        return text

    def read(self, ref: str) -> str | None:
        """The commit id a branch or tag points at, or None when it does not exist."""
        text = self._read_raw(ref)
        if text is None:
            return None
        if not is_object_id(text):
            raise CorruptObjectError(ref, "the ref file does not hold a commit id")
        return text

    def head_target(self) -> str | None:
        """The ref HEAD points at (``refs/heads/main``), or None when HEAD is detached."""
        text = self._read_raw("HEAD")
        if text is None:
            raise CorruptObjectError("HEAD", "missing")
        if text.startswith("ref: "):
            target = text[5:].strip()
            if not target.startswith(HEADS):
                raise CorruptObjectError("HEAD", f"points outside refs/heads/: {target}")
            self._path(target)
            return target
        if not is_object_id(text):
            raise CorruptObjectError("HEAD", "holds neither a ref nor a commit id")
        return None

    def head_commit(self) -> str | None:
        target = self.head_target()
        if target is not None:
            return self.read(target)
        text = self._read_raw("HEAD")
        return text

    def list(self, prefix: str) -> dict[str, str]:
        """``{short name: commit id}`` for every ref below ``prefix`` (``refs/heads/`` or ``refs/tags/``)."""
        base = self.root.joinpath(*prefix.rstrip("/").split("/"))
        out: dict[str, str] = {}
        if not base.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                if fn.endswith(".lock") or fn.startswith("."):
                    continue
                rel = Path(dirpath, fn).relative_to(base).as_posix()
                with contextlib.suppress(InvalidRefNameError):
                    oid = self.read(prefix + rel)
                    if oid is not None:
                        out[rel] = oid
        return dict(sorted(out.items()))

    # -- writing --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, ref: str) -> Iterator[Path]:
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        # A lock is held for milliseconds; wait a little for a concurrent writer before giving up.
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                if time.monotonic() >= deadline:
                    info = LockInfo.read(lock)
                    raise RefLockedError(ref, str(lock), info.pid if info else None,
                                         bool(info and info.stale)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            os.write(fd, owner.encode())
        finally:
            os.close(fd)
        try:
            yield lock
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    def _write_locked(self, lock: Path, path: Path, text: str) -> None:
        """Replace ``path`` with ``text`` while holding ``lock`` (temp file, fsync, rename)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def locks(self) -> list[LockInfo]:
        """Every ref lock file present (normally none: a lock lives for milliseconds)."""
        out = []
        for lock in sorted(self.root.glob("HEAD.lock")) + sorted((self.root / "refs").rglob("*.lock")):
            info = LockInfo.read(lock)
            out.append(info or LockInfo(lock, None, None, None))
        return out

    def clear_stale_locks(self, force: bool = False) -> list[LockInfo]:
        """Remove lock files whose process is gone (``force``: every lock). Returns those removed."""
        removed = []
        for info in self.locks():
            if force or info.stale:
                with contextlib.suppress(FileNotFoundError):
                    info.path.unlink()
                removed.append(info)
        return removed

    def set_if_equals(self, ref: str, old: str | None, new: str | None, message: str = "") -> None:
        """Move ``ref`` from ``old`` to ``new`` (None: absent), or raise RefMovedError if it is not at ``old``.

        This is the only way a branch or tag moves. ``new=None`` deletes the ref.
        """
        if new is not None and not is_object_id(new):
            raise ValueError(f"not a commit id: {new}")
        path = self._path(ref)
        with self._locked(ref) as lock:
            current = self.read(ref)
            if current != old:
                raise RefMovedError(ref, old, current)
            if new is None:
                path.unlink()
            else:
                self._write_locked(lock, path, new)
            self._log(ref, old, new, message)
        if new is None:
            self._prune_empty_dirs(path.parent)

    def set_head(self, target: str, message: str = "", expected: str | None = None) -> None:
        """Point HEAD at a branch (``refs/heads/x``) or, detached, at a commit id.

        With ``expected``, HEAD must be detached at that commit (compare-and-swap, as for a commit made on a
        detached HEAD)."""
        path = self._path("HEAD")
        if target.startswith(HEADS):
            self._path(target)
            text = f"ref: {target}"
        elif is_object_id(target):
            text = target
        else:
            raise ValueError(f"HEAD can point at a branch or a commit id, not {target!r}")
        with self._locked("HEAD") as lock:
            old = self.head_commit() if path.exists() else None
            if expected is not None and (self.head_target() is not None or old != expected):
                raise RefMovedError("HEAD", expected, old)
            self._write_locked(lock, path, text)
            self._log("HEAD", old, self.head_commit(), message)

    def init_head(self, branch_ref: str) -> None:
        self._path(branch_ref)
        self._path("HEAD").write_text(f"ref: {branch_ref}\n", encoding="utf-8")

    def _prune_empty_dirs(self, folder: Path) -> None:
        stop = {self.root / "refs" / "heads", self.root / "refs" / "tags", self.root / "refs" / "remotes"}
        while folder not in stop and folder != self.root:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- reflog ---------------------------------------------------------------------------------------------
    def _log_path(self, ref: str) -> Path:
        return self.root.joinpath("logs", *ref.split("/"))

    def _log(self, ref: str, old: str | None, new: str | None, message: str) -> None:
        p = self._log_path(ref)
        p.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"old": old, "new": new, "time": round(time.time(), 3), "message": message},
                          sort_keys=True, ensure_ascii=False)
        with open(p, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def reflog(self, ref: str) -> list[ReflogEntry]:
        """Moves of ``ref``, newest first."""
        p = self._log_path(ref)
        out: list[ReflogEntry] = []
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                d = json.loads(line)
                out.append(ReflogEntry(ref, d.get("old"), d.get("new"), float(d.get("time", 0)),
                                       str(d.get("message", ""))))
            except (ValueError, TypeError, AttributeError):
                continue  # a torn last line after a crash is skipped, not fatal
        out.reverse()
        return out
