"""Git hooks (``adaptvc hooks install``): pre-commit refuses adapter weights in git; post-checkout and
post-merge bring the adapter version pinned in ``adaptvc.lock`` back into its work tree, so checking out old
code brings back the adapter it produced. A hook never breaks the user's git command: problems are warnings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import AdaptvcError
from ..provenance import gitcmd
from ..provenance.pin import read_lock
from ..storage.atomic import open_dir, read_file, write_atomic

MARKER = "# installed by adaptvc"
HOOKS = ("pre-commit", "post-checkout", "post-merge")
DEFAULT_MAX_WEIGHT_BYTES = 5 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def git_root(path: str | os.PathLike[str]) -> Path | None:
    """The top of the git work tree containing ``path``, or None (no git, or not in a repository)."""
    repo = gitcmd.open_repo(path)
    return gitcmd.work_tree(repo) if repo is not None else None


def hook_script(name: str, python: str = "python3") -> str:
    """The hook file adaptvc installs (``hooks/`` in the source tree holds the same, with ``python3``)."""
    return (f"#!/bin/sh\n{MARKER} (adaptvc hooks uninstall removes it)\n"
            f'exec "{python}" -m adaptvc hooks run {name} "$@"\n')


def hooks_dir(git_top: Path) -> Path:
    repo = gitcmd.open_repo(git_top)
    if repo is None:
        raise AdaptvcError(f"{git_top} is not a git repository")
    configured = gitcmd.config_value(repo, "core", "hooksPath")
    if configured:
        path = Path(os.path.expanduser(configured))
        return path if path.is_absolute() else git_top / path
    return Path(repo.common_dir) / "hooks"


def _ours(folder: Path, name: str) -> bool | None:
    """True: a hook adaptvc installed; False: someone else's; None: no hook of that name."""
    try:
        data = read_file(folder, name, 1 << 20)
    except (OSError, ValueError):
        return False
    if data is None:
        return None
    return MARKER.encode() in data


def install_hooks(git_top: Path, python: str | None = None) -> list[Path]:
    folder = hooks_dir(git_top)
    folder.mkdir(parents=True, exist_ok=True)
    foreign = [folder / n for n in HOOKS if _ours(folder, n) is False]
    if foreign:
        raise AdaptvcError(f"{foreign[0]} exists and was not installed by adaptvc; move it away (or call "
                           f"'python -m adaptvc hooks run {foreign[0].name} \"$@\"' from it) and try again")
    for name in HOOKS:
        write_atomic(folder, name, hook_script(name, python or sys.executable).encode(), mode=0o755)
    return [folder / n for n in HOOKS]


def uninstall_hooks(git_top: Path) -> list[Path]:
    folder = hooks_dir(git_top)
    removed = []
    for name in HOOKS:
        if _ours(folder, name):
            fd = open_dir(folder)
            try:
                os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)
            removed.append(folder / name)
    return removed


def run_pre_commit(git_top: Path) -> tuple[int, str]:
    """Refuse staged adapter weights over the size limit. Returns (exit code, message for stderr)."""
    repo = gitcmd.open_repo(git_top)
    if repo is None:
        return 0, ""
    limit_text = gitcmd.config_value(repo, "adaptvc", "maxWeightBytes") or ""
    limit = int(limit_text) if limit_text.isdigit() else DEFAULT_MAX_WEIGHT_BYTES
    staged = gitcmd.run(repo, "diff", "--cached", "--name-only", "--diff-filter=AM", "-z").split("\0")
    big = []
    for path in filter(None, staged):
        if path.endswith(WEIGHT_SUFFIXES):
            size = int(gitcmd.run(repo, "cat-file", "-s", f":{path}") or 0)
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
