"""Refs on disk: branches, tags and HEAD, moved only by compare-and-swap under a lock file, with a reflog.

Layout (like git): ``HEAD`` holds ``ref: refs/heads/main`` or a commit id; ``refs/heads/<branch>`` and
``refs/tags/<tag>`` hold one commit id each; ``logs/<ref>`` holds one JSON line per move.

Every file is reached without following links and written through :mod:`adaptvc.storage.atomic`; a ref file
that is garbage or a link is reported by :meth:`DiskRefs.bad_refs` and skipped by everything else, so one
damaged ref never stops the commands that do not need it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import (
    AdaptvcWarning,
    CorruptObjectError,
    InvalidRefNameError,
    RefLockedError,
    RefMovedError,
    SymlinkRefusedError,
)
from ..hashing import is_object_id
from ..parsing import JsonError, parse_json
from ..refnames import HEADS, PREFIXES, REMOTES, TAGS, check_full_ref, is_valid_full_ref
from .atomic import append_line, open_dir, opened_dir, read_file, split, write_atomic
from .base import BadRef, ReflogEntry, Refs
from .locks import LockInfo, held

#: a ref file holds one id; a reflog may be long, but not this long
MAX_REF_FILE = 4096
MAX_REFLOG = 256 << 20


class DiskRefs(Refs):
    #: seconds to wait for another process's lock on a ref before reporting it as locked
    lock_timeout = 3.0

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    # -- reading --------------------------------------------------------------------------------------------
    def _read_raw(self, ref: str) -> str | None:
        check_full_ref(ref)
        try:
            data = read_file(self.root, ref, MAX_REF_FILE)
        except SymlinkRefusedError:
            raise CorruptObjectError(ref, "the ref file is a symbolic link") from None
        except (IsADirectoryError, NotADirectoryError):
            return None
        except ValueError:
            raise CorruptObjectError(ref, "the ref file is too large") from None
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTDIR):
                return None
            raise
        if data is None:
            return None
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise CorruptObjectError(ref, "the ref file is not text") from None

    def read(self, ref: str) -> str | None:
        text = self._read_raw(ref)
        if text is None:
            return None
        if not is_object_id(text):
            raise CorruptObjectError(ref, "the ref file does not hold a commit id")
        return text

    def head_raw(self) -> str | None:
        return self._read_raw("HEAD")

    def _ref_files(self, prefix: str) -> Iterator[str]:
        """Full names of the entries below ``prefix`` that are not folders (links included), unvalidated."""
        try:
            fd = open_dir(self.root, prefix.rstrip("/"))
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return
        try:
            yield from self._walk(fd, prefix)
        finally:
            os.close(fd)

    def _walk(self, fd: int, prefix: str) -> Iterator[str]:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.endswith(".lock") or e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                try:
                    sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError:
                    continue
                try:
                    yield from self._walk(sub, f"{prefix}{e.name}/")
                finally:
                    os.close(sub)
            else:
                yield prefix + e.name

    def list(self, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for ref in self._ref_files(prefix):
            with contextlib.suppress(InvalidRefNameError, CorruptObjectError, OSError):
                oid = self.read(ref)
                if oid is not None:
                    out[ref[len(prefix):]] = oid
        return dict(sorted(out.items()))

    def bad_refs(self) -> list[BadRef]:
        bad = []
        for prefix in PREFIXES:
            for ref in self._ref_files(prefix):
                try:
                    self.read(ref)
                except (InvalidRefNameError, CorruptObjectError, OSError) as e:
                    bad.append(BadRef(ref, str(e)))
        return bad

    # -- writing --------------------------------------------------------------------------------------------
    def _lock_busy(self, ref: str, lock_path: Path):
        def on_busy(info: LockInfo | None) -> None:
            raise RefLockedError(ref, str(lock_path), info.pid if info else None, bool(info and info.stale))
        return on_busy

    @contextlib.contextmanager
    def _locked(self, ref: str) -> Iterator[None]:
        parts = split(ref)
        lock = parts[-1] + ".lock"
        with opened_dir(self.root, parts[:-1], create=True) as fd, \
                held(fd, lock, self.lock_timeout, self._lock_busy(ref, self.root.joinpath(*parts[:-1], lock)),
                     take_over=False):
            yield

    def set_if_equals(self, ref: str, old: str | None, new: str | None, message: str = "") -> None:
        if new is not None and not is_object_id(new):
            raise ValueError(f"not a commit id: {new}")
        check_full_ref(ref)
        with self._locked(ref):
            current = self.read(ref)
            if current != old:
                raise RefMovedError(ref, old, current)
            if new is None:
                parts = split(ref)
                with opened_dir(self.root, parts[:-1]) as fd:
                    os.unlink(parts[-1], dir_fd=fd)
            else:
                write_atomic(self.root, ref, (new + "\n").encode())
            self._log(ref, old, new, message)
        if new is None:
            self._prune_empty_dirs(ref)

    def set_head(self, target: str, message: str = "", expected: str | None = None) -> None:
        if target.startswith(HEADS):
            check_full_ref(target)
            text = f"ref: {target}"
        elif is_object_id(target):
            text = target
        else:
            raise ValueError(f"HEAD can point at a branch or a commit id, not {target!r}")
        with self._locked("HEAD"):
            old = self.head_commit() if self.head_raw() is not None else None
            if expected is not None and (self.head_target() is not None or old != expected):
                raise RefMovedError("HEAD", expected, old)
            write_atomic(self.root, "HEAD", (text + "\n").encode())
            self._log("HEAD", old, self.head_commit(), message)

    def init_head(self, branch_ref: str) -> None:
        check_full_ref(branch_ref)
        write_atomic(self.root, "HEAD", f"ref: {branch_ref}\n".encode())

    def _prune_empty_dirs(self, ref: str) -> None:
        parts = split(ref)[:-1]
        while len(parts) > 2:  # never refs/heads, refs/tags, refs/remotes themselves
            try:
                with opened_dir(self.root, parts[:-1]) as fd:
                    os.rmdir(parts[-1], dir_fd=fd)
            except OSError:
                return
            parts = parts[:-1]

    # -- reflog ---------------------------------------------------------------------------------------------
    def _log(self, ref: str, old: str | None, new: str | None, message: str) -> None:
        """Append the move to the ref's reflog. The ref has already moved: a failure here is a warning, and
        the message says the move happened."""
        line = json.dumps({"old": old, "new": new, "time": round(time.time(), 3), "message": message},
                          sort_keys=True, ensure_ascii=False)
        try:
            append_line(self.root, "logs/" + ref, (line + "\n").encode())
        except (OSError, SymlinkRefusedError) as e:
            warnings.warn(f"{ref} moved to {new or 'nothing'} as asked, but its reflog could not be written "
                          f"({e}); the history is intact", AdaptvcWarning, stacklevel=3)

    def reflog(self, ref: str) -> list[ReflogEntry]:
        check_full_ref(ref)
        try:
            data = read_file(self.root, "logs/" + ref, MAX_REFLOG)
        except (SymlinkRefusedError, ValueError, IsADirectoryError, NotADirectoryError):
            return []
        out: list[ReflogEntry] = []
        for raw in (data or b"").split(b"\n"):
            try:
                d = parse_json(raw, max_depth=2)
                old, new = d.get("old"), d.get("new")
                out.append(ReflogEntry(ref, old if isinstance(old, str) else None,
                                       new if isinstance(new, str) else None, float(d.get("time", 0)),
                                       str(d.get("message", ""))))
            except (JsonError, ValueError, TypeError, AttributeError):
                continue  # a torn last line after a crash is skipped, not fatal
        out.reverse()
        return out

    def reflog_refs(self) -> list[str]:
        try:
            fd = open_dir(self.root, "logs")
        except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
            return []
        try:
            names = list(self._walk(fd, ""))
        finally:
            os.close(fd)
        return [n for n in names if is_valid_full_ref(n)]

    def delete_reflog(self, ref: str) -> None:
        check_full_ref(ref)
        parts = ["logs", *split(ref)]
        with contextlib.suppress(FileNotFoundError, SymlinkRefusedError, NotADirectoryError), \
                opened_dir(self.root, parts[:-1]) as fd:
            os.unlink(parts[-1], dir_fd=fd)

    # -- locks ----------------------------------------------------------------------------------------------
    def locks(self) -> list[LockInfo]:
        """Every ref lock file present (normally none: a lock lives for milliseconds)."""
        out = []
        candidates = [("", "HEAD.lock")]
        for prefix in (HEADS, TAGS, REMOTES):
            try:
                fd = open_dir(self.root, prefix.rstrip("/"))
            except (FileNotFoundError, SymlinkRefusedError, NotADirectoryError):
                continue
            try:
                for dirpath, _, files, dfd in os.fwalk(dir_fd=fd):
                    rel = prefix + (dirpath[2:] + "/" if dirpath.startswith("./") else "")
                    candidates += [(rel, f) for f in files if f.endswith(".lock")]
                    del dfd
            finally:
                os.close(fd)
        for rel, name in candidates:
            path = self.root / rel / name
            with contextlib.suppress(FileNotFoundError, SymlinkRefusedError, NotADirectoryError), \
                    opened_dir(self.root, rel) as fd:
                if not os.path.lexists(path):
                    continue
                info = LockInfo.read(Path(name), fd)
                out.append(LockInfo(path, info.pid, info.host, info.time) if info else LockInfo(path, None, None, None))
        return sorted(out, key=lambda i: str(i.path))

    def clear_stale_locks(self, force: bool = False) -> list[LockInfo]:
        """Remove lock files whose process is gone (``force``: every lock). Returns those removed."""
        removed = []
        for info in self.locks():
            if force or info.stale:
                rel = info.path.relative_to(self.root)
                with contextlib.suppress(FileNotFoundError), opened_dir(self.root, rel.parent.as_posix()) as fd:
                    os.unlink(rel.name, dir_fd=fd)
                removed.append(info)
        return removed

    def rewrite_reflog(self, ref: str, entries: list[ReflogEntry], expected: list[ReflogEntry] | None = None,
                       ) -> None:
        check_full_ref(ref)
        with self._locked(ref):  # moves of the ref append to its log under this lock: none can interleave
            if expected is not None and self.reflog(ref) != expected:
                raise _reflog_moved(ref)
            if not entries:
                self.delete_reflog(ref)
                return
            lines = [json.dumps({"old": e.old, "new": e.new, "time": e.time, "message": e.message},
                                sort_keys=True, ensure_ascii=False) for e in reversed(entries)]
            write_atomic(self.root, "logs/" + ref, ("\n".join(lines) + "\n").encode())


def _reflog_moved(ref: str) -> RefMovedError:
    err = RefMovedError(ref, None, None)
    err.args = (f"the reflog of {ref} changed while it was being rewritten; nothing was lost: run the command "
                "again",)
    return err
