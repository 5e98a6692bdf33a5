"""Tying adapter versions to the code that trained them: provenance, ``adaptvc.lock`` and git hooks.

* Each adaptvc commit made inside a git work tree records ``{"git_commit", "dirty", "branch"}`` of the code
  (never a path or a remote URL: those leak disks and credentials).
* ``adaptvc pin [REV]`` writes ``adaptvc.lock`` at the root of the code's repository, naming an adapter
  version; committed with the code, it says which adapter that code produced.
* Git hooks (``adaptvc hooks install``): pre-commit refuses adapter weights in git; post-checkout and
  post-merge bring the pinned adapter version back into its work tree, so checking out old code brings back
  the adapter it produced. A hook never breaks the user's git command: problems are warnings.

Everything goes through the ``git`` executable (no gitpython: the core stays light).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import AdaptvcError
from ..hashing import is_object_id

LOCK_NAME = "adaptvc.lock"
MARKER = "# installed by adaptvc"
HOOKS = ("pre-commit", "post-checkout", "post-merge")
DEFAULT_MAX_WEIGHT_BYTES = 5 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _git(cwd: str | os.PathLike[str], *args: str, check: bool = True) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=30)
    if check and res.returncode != 0:
        raise AdaptvcError(f"git {' '.join(args)} failed: {res.stderr.strip().splitlines()[0] if res.stderr else ''}")
    return res.stdout.strip()


def git_root(path: str | os.PathLike[str]) -> Path | None:
    """The top of the git work tree containing ``path``, or None (no git, or not in a repository)."""
    if shutil.which("git") is None:
        return None
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        top = _git(folder, "rev-parse", "--show-toplevel", check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top) if top else None


def code_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"git_commit", "dirty", "branch"}`` of the git repository containing ``path``, or None."""
    root = git_root(path)
    if root is None:
        return None
    try:
        commit = _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False) or None
        branch = _git(root, "symbolic-ref", "-q", "--short", "HEAD", check=False) or None
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no", check=False))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"git_commit": commit, "dirty": dirty, "branch": branch}


# -- adaptvc.lock ------------------------------------------------------------------------------------------
def write_lock(git_top: Path, work_tree: Path, commit: str, rev: str) -> Path:
    rel = os.path.relpath(work_tree.resolve(), git_top.resolve())
    if rel.startswith(".."):
        raise AdaptvcError(f"the adaptvc repository {work_tree} is outside the git repository {git_top}")
    data = {"format": 1, "work_tree": Path(rel).as_posix(), "commit": commit, "rev": rev}
    path = git_top / LOCK_NAME
    tmp = path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_lock(git_top: Path) -> tuple[Path, str] | None:
    """(adaptvc work tree, commit id) named by the lock file, checked as hostile input; None when absent."""
    path = git_top / LOCK_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AdaptvcError(f"{LOCK_NAME} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != 1:
        raise AdaptvcError(f"{LOCK_NAME} is not an adaptvc lock file of format 1")
    rel, commit = data.get("work_tree"), data.get("commit")
    if not isinstance(commit, str) or not is_object_id(commit):
        raise AdaptvcError(f"{LOCK_NAME}: 'commit' is not an adaptvc commit id")
    if not isinstance(rel, str) or rel.startswith("/") or "\\" in rel or ".." in rel.split("/") or "\x00" in rel:
        raise AdaptvcError(f"{LOCK_NAME}: 'work_tree' must be a relative path inside the repository")
    work = (git_top / rel).resolve()
    if git_top.resolve() not in (work, *work.parents):
        raise AdaptvcError(f"{LOCK_NAME}: 'work_tree' leaves the repository")
    return work, commit


# -- hooks -------------------------------------------------------------------------------------------------
def hook_script(name: str, python: str = "python3") -> str:
    """The hook file adaptvc installs (``hooks/`` in the source tree holds the same, with ``python3``)."""
    return (f"#!/bin/sh\n{MARKER} (adaptvc hooks uninstall removes it)\n"
            f'exec "{python}" -m adaptvc hooks run {name} "$@"\n')


def hooks_dir(git_top: Path) -> Path:
    path = Path(_git(git_top, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else git_top / path


def install_hooks(git_top: Path, python: str | None = None) -> list[Path]:
    folder = hooks_dir(git_top)
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / name for name in HOOKS]
    foreign = [p for p in targets if p.exists() and MARKER not in p.read_text(errors="replace")]
    if foreign:
        raise AdaptvcError(f"{foreign[0]} exists and was not installed by adaptvc; move it away (or call "
                           f"'python -m adaptvc hooks run {foreign[0].name} \"$@\"' from it) and try again")
    for p in targets:
        p.write_text(hook_script(p.name, python or sys.executable), encoding="utf-8")
        p.chmod(0o755)
    return targets


def uninstall_hooks(git_top: Path) -> list[Path]:
    removed = []
    for name in HOOKS:
        p = hooks_dir(git_top) / name
        if p.exists() and MARKER in p.read_text(errors="replace"):
            p.unlink()
            removed.append(p)
    return removed


def run_pre_commit(git_top: Path) -> tuple[int, str]:
    """Refuse staged adapter weights over the size limit. Returns (exit code, message for stderr)."""
    limit_text = _git(git_top, "config", "--get", "adaptvc.maxWeightBytes", check=False)
    limit = int(limit_text) if limit_text.isdigit() else DEFAULT_MAX_WEIGHT_BYTES
    staged = _git(git_top, "diff", "--cached", "--name-only", "--diff-filter=AM", "-z").split("\0")
    big = []
    for path in filter(None, staged):
        if path.endswith(WEIGHT_SUFFIXES):
            size = int(_git(git_top, "cat-file", "-s", f":{path}") or 0)
            if size > limit:
                big.append((path, size))
    if not big:
        return 0, ""
    names = ", ".join(f"{p} ({s / 1e6:.1f} MB)" for p, s in big)
    return 1, (f"adaptvc: refusing to commit adapter weights to git: {names}. Version them with "
               f"'adaptvc commit' and unstage with 'git rm --cached FILE' (limit {limit} bytes: "
               f"git config adaptvc.maxWeightBytes N; 'git commit --no-verify' skips this check)")


def run_checkout_hook(git_top: Path) -> str:
    """Bring the adapter version named by ``adaptvc.lock`` into its work tree. Returns a message (or "")."""
    from ..errors import UncommittedChangesError
    from ..repository import Repository

    try:
        lock = read_lock(git_top)
    except AdaptvcError as e:
        return f"adaptvc: warning: {e}; adapter left as it is"
    if lock is None:
        return ""
    work, commit = lock
    try:
        repo = Repository(work, discover=False)
        if repo.head() == commit and repo.status().clean:
            return ""
        repo.checkout(commit)
    except UncommittedChangesError as e:
        return f"adaptvc: warning: not restoring adapter {commit[:12]}: {e}"
    except AdaptvcError as e:
        return f"adaptvc: warning: could not restore adapter {commit[:12]} in {work}: {e}"
    return f"adaptvc: adapter {commit[:12]} restored in {work}"


def run_hook(name: str, args: list[str], cwd: Path) -> tuple[int, str]:
    top = git_root(cwd)
    if top is None:
        return 0, ""
    if name == "pre-commit":
        return run_pre_commit(top)
    if name == "post-checkout":
        return 0, run_checkout_hook(top) if len(args) >= 3 and args[2] == "1" else ""
    if name == "post-merge":
        return 0, run_checkout_hook(top)
    return 0, f"adaptvc: unknown hook {name!r}"
