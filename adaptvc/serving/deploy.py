"""Deploy: switch a serving name to a version atomically, keep a few old versions, and check what is deployed.

``deploy(…, root="/srv/lora", name="support-bot")`` makes sure ``/srv/lora/support-bot@<version>/`` holds the
export (written and verified first, see :mod:`adaptvc.serving.export`), then points the symbolic link
``/srv/lora/support-bot`` at it: a new link is made under a temporary name and renamed over the old one, so a
reader resolving ``support-bot`` finds the old version or the new one, complete, and never a mix. No version
folder is ever modified once it exists, so a server reading one is never disturbed.

``keep=N`` then removes the oldest version folders of that name beyond N (by deploy time), never the one just
deployed, and never a folder adaptvc did not write or that holds anything its record does not list. A folder
is first renamed to a temporary name and then deleted: a reader sees the whole folder or none.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..objects import Commit
from ..progress import SILENT, Progress
from ..storage.atomic import remove_tree, temp_name
from ..storage.base import ObjectStore
from .export import (
    ExportConflictError,
    check_base_at_hand,
    check_folder,
    ensure_version,
    plan_export,
    serving_lock,
    store_problems,
)
from .layout import check_name, parse_folder_name


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did: ``link`` now points at ``folder``; ``previous`` is the version it pointed at before."""

    name: str
    version: str
    commit: str
    folder: str
    link: str
    previous: str | None
    written: bool
    removed: tuple[str, ...] = ()
    left: tuple[tuple[str, str], ...] = ()
    served_base: str | None = None
    bases_checked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "commit": self.commit, "folder": self.folder,
                "link": self.link, "previous": self.previous, "written": self.written, "removed": list(self.removed),
                "left": [{"folder": f, "reason": r} for f, r in self.left], "served_base": self.served_base,
                "bases_checked": list(self.bases_checked)}


def _kind(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "folder" if stat.S_ISDIR(st.st_mode) else "file"


def current_version(root_fd: int, root: Path, name: str) -> str | None:
    """The version folder ``root/name`` links to (None when there is no link yet). Refuses anything but a link
    adaptvc could have made: a folder, a file, or a link to anything other than ``name@<version>`` in ``root``."""
    where = str(root / name)
    kind = _kind(root_fd, name)
    if kind == "absent":
        return None
    if kind != "link":
        raise ExportConflictError(where, f"is a {kind}, not the symbolic link adaptvc switches between versions")
    target = os.readlink(name, dir_fd=root_fd)
    parsed = parse_folder_name(target)
    if parsed is None or parsed[0] != name:
        raise ExportConflictError(where, f"is a link to {target!r}, which is not a version of {name!r} in {root}; "
                                         "adaptvc switches only links to its own version folders")
    return target


def switch_link(root_fd: int, name: str, target: str) -> None:
    """Point ``name`` at ``target`` (both in ``root_fd``) in one step: a new link under a temporary name, renamed
    over the old one."""
    tmp = temp_name(name)
    os.symlink(target, tmp, dir_fd=root_fd)
    try:
        os.replace(tmp, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=root_fd)
        raise
    os.fsync(root_fd)


def prune(root_fd: int, root: Path, name: str, keep: int, current: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove ``name``'s version folders beyond the ``keep`` most recently deployed (``current`` counts as one
    and is never removed). Returns (removed, [(left in place, why)])."""
    candidates: list[tuple[int, str]] = []
    left: list[tuple[str, str]] = []
    for entry in sorted(os.listdir(root_fd)):
        parsed = parse_folder_name(entry)
        if parsed is None or parsed[0] != name or entry == current:
            continue
        kind = _kind(root_fd, entry)
        if kind != "folder":
            left.append((entry, f"a {kind}, not a folder adaptvc wrote"))
            continue
        check = check_folder(root_fd, entry, str(root))
        if check.record is None:
            left.append((entry, check.problems[0]))
        elif not check.intact:
            left.append((entry, f"changed since adaptvc wrote it ({check.problems[0]})"))
        else:
            mtime = os.stat(entry, dir_fd=root_fd, follow_symlinks=False).st_mtime_ns
            candidates.append((mtime, entry))
    candidates.sort(reverse=True)
    removed = []
    for _, entry in candidates[max(keep - 1, 0):]:
        doomed = temp_name(entry)
        os.rename(entry, doomed, src_dir_fd=root_fd, dst_dir_fd=root_fd)  # gone as a whole, for any reader
        remove_tree(root_fd, doomed)
        removed.append(entry)
    if removed:
        os.fsync(root_fd)
    return removed, left


def _mark_deployed(root_fd: int, name: str, folder: str) -> None:
    """Record the deploy order --keep goes by in the folder's mtime: now, and later than every other version
    of ``name`` (clock ticks are coarse; two quick deploys must still be ordered)."""
    latest = 0
    for entry in os.listdir(root_fd):
        parsed = parse_folder_name(entry)
        if parsed is not None and parsed[0] == name and entry != folder:
            with contextlib.suppress(OSError):
                latest = max(latest, os.stat(entry, dir_fd=root_fd, follow_symlinks=False).st_mtime_ns)
    when = max(time.time_ns(), latest + 1_000)
    os.utime(folder, ns=(when, when), dir_fd=root_fd, follow_symlinks=False)


def deploy(store: ObjectStore, commit: Commit, root: str | os.PathLike[str], name: str, *, keep: int | None = None,
           served_base: str | None = None, force: bool = False, cache_file: Path | None = None,
           progress: Progress = SILENT) -> DeployResult:
    """Export ``commit`` to ``root/<name>@<version>/`` (unless it is already there, intact), then switch the
    link ``root/<name>`` to it atomically; with ``keep``, remove older version folders of ``name`` beyond that
    many. ``force`` skips the check of the adapter against a base model at hand."""
    check_name(name)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise InvalidInputError(f"--keep {keep}", "would remove the version being deployed: keep at least 1")
    plan = plan_export(store, commit, name, served_base)
    bases = [] if force else check_base_at_hand(plan.snapshot, commit.base, served_base, cache_file)
    root = Path(root)
    with serving_lock(root) as fd:
        previous = current_version(fd, root, name)
        written = ensure_version(store, plan, root, fd, progress)
        switch_link(fd, name, plan.folder)
        _mark_deployed(fd, name, plan.folder)
        removed, left = prune(fd, root, name, keep, plan.folder) if keep is not None else ([], [])
    r = plan.record
    return DeployResult(name, r.version, r.commit, str(root / plan.folder), str(root / name), previous, written,
                        tuple(removed), tuple(left), served_base, tuple(bases))


# -- what is deployed --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionState:
    """One version folder of a serving folder, checked against its record (and the store when it has the
    commit: ``checked == "store"``)."""

    folder: str
    name: str
    version: str
    current: bool
    commit: str | None
    message: str | None
    served_base: str | None
    written_by_adaptvc: bool
    checked: str
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return self.written_by_adaptvc and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "version": self.version, "current": self.current, "commit": self.commit,
                "message": self.message, "served_base": self.served_base,
                "written_by_adaptvc": self.written_by_adaptvc, "checked": self.checked, "intact": self.intact,
                "problems": list(self.problems)}


@dataclass(frozen=True)
class NameState:
    """A serving name: the version its link points at, and every version folder of that name."""

    name: str
    current: str | None
    problems: tuple[str, ...]
    versions: tuple[VersionState, ...]

    @property
    def intact(self) -> bool:
        return not self.problems and all(v.intact for v in self.versions)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "current": self.current, "intact": self.intact, "problems": list(self.problems),
                "versions": [v.to_dict() for v in self.versions]}


@dataclass(frozen=True)
class DeployedReport:
    root: str
    names: tuple[NameState, ...]

    @property
    def intact(self) -> bool:
        return all(n.intact for n in self.names)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "intact": self.intact, "names": [n.to_dict() for n in self.names]}


def deployed(root: str | os.PathLike[str], store: ObjectStore | None = None) -> DeployedReport:
    """Every serving name in ``root``: where its link points, and whether each of its version folders is
    intact — its files match its ``adaptvc.json``, and, when ``store`` holds the commit, the record matches
    what exporting that commit gives. Nothing is followed, nothing is written."""
    root = Path(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        links: dict[str, tuple[str | None, list[str]]] = {}
        folders: dict[str, list[str]] = {}
        plain: set[str] = set()
        for entry in sorted(os.listdir(fd)):
            parsed = parse_folder_name(entry)
            if parsed is not None:
                folders.setdefault(parsed[0], []).append(entry)
                continue
            try:
                check_name(entry)
            except InvalidInputError:
                continue  # not a serving name (dot-files, temporary entries, other things)
            kind = _kind(fd, entry)
            if kind != "link":
                plain.add(entry)
                continue
            try:
                links[entry] = (current_version(fd, root, entry), [])
            except ExportConflictError:
                links[entry] = (None, [f"{root / entry} links to {os.readlink(entry, dir_fd=fd)!r}, which is not a "
                                       f"version of {entry!r} in {root}"])
        names = []
        for name in sorted(set(links) | set(folders)):
            current, problems = links.get(name, (None, []))
            if name in plain:
                problems.append(f"{root / name} is not a link adaptvc made")
            if current is not None and current not in folders.get(name, []):
                problems.append(f"{root / name} points at {current}, which is missing")
            versions = tuple(_version_state(fd, root, entry, entry == current, store)
                             for entry in folders.get(name, []))
            names.append(NameState(name, current, tuple(problems), versions))
        return DeployedReport(str(root), tuple(names))
    finally:
        os.close(fd)


def _version_state(fd: int, root: Path, entry: str, current: bool, store: ObjectStore | None) -> VersionState:
    name, version = parse_folder_name(entry) or ("", "")
    kind = _kind(fd, entry)
    if kind != "folder":
        return VersionState(entry, name, version, current, None, None, None, False, "record",
                            (f"a {kind}, not a folder adaptvc wrote",))
    check = check_folder(fd, entry, str(root))
    record = check.record
    if record is None:
        return VersionState(entry, name, version, current, None, None, None, False, "record", check.problems)
    problems = list(check.problems)
    checked = "record"
    if store is not None:
        more = store_problems(store, record)
        if more is not None:
            checked = "store"
            problems += more
    summary = record.message.splitlines()[0] if record.message else ""
    return VersionState(entry, name, version, current, record.commit, summary, record.served_base, True, checked,
                        tuple(problems))
