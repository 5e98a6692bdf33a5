"""The one way adaptvc talks to git: through GitPython (imported only when a git repository is at hand), with
every command a repository could configure switched off; the author's identity alone is one plain
``git config`` read (reading config runs nothing).

A repository's own config may name commands that git runs on its own: ``core.fsmonitor`` (on every status),
filter drivers (``filter.<name>.clean/smudge/process``, run whenever a file's content is hashed), hooks. A
work tree is someone else's code as often as it is yours, so every git call made here overrides them with
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` (which beat every config file): no fsmonitor,
no hooks, and every filter driver defined anywhere in the config emptied (git then copies content as is).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import AdaptvcError

#: the git operations adaptvc runs take milliseconds; a hung git must not hang a commit
TIMEOUT = 30


def _git_module() -> Any | None:
    if shutil.which("git") is None:
        return None
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        import git
    except ImportError:
        return None
    return git


def _in_a_git_tree(folder: Path) -> bool:
    """Whether ``folder`` or one of its parents holds a ``.git`` entry (a folder, or a file for worktrees and
    submodules): a cheap look before GitPython (~40 ms to import) is brought in at all."""
    return any(os.path.lexists(candidate / ".git") for candidate in (folder, *folder.parents))


def open_repo(path: str | os.PathLike[str]) -> Any | None:
    """The git repository containing ``path`` (a GitPython ``Repo``), or None: no git, or not in one."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    if not _in_a_git_tree(folder):
        return None
    git = _git_module()
    if git is None:
        return None
    try:
        repo = git.Repo(folder, search_parent_directories=True)
    except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError, OSError, ValueError):
        return None
    if repo.bare or repo.working_tree_dir is None:
        return None
    return repo


def safe_environment(repo: Any) -> dict[str, str]:
    """Environment that makes git run none of the commands the repository's config names."""
    overrides = [("core.fsmonitor", "false"), ("core.hooksPath", os.devnull), ("core.untrackedCache", "false"),
                 ("core.pager", "cat"), ("diff.external", "")]
    try:
        reader = repo.config_reader()
        drivers = sorted({s[len('filter "'):-1] for s in reader.sections() if s.startswith('filter "')})
    except Exception:  # an unreadable config: git itself will complain; override nothing more
        drivers = []
    for name in drivers:
        overrides += [(f"filter.{name}.clean", ""), (f"filter.{name}.smudge", ""), (f"filter.{name}.process", ""),
                      (f"filter.{name}.required", "false")]
    env = {"GIT_CONFIG_COUNT": str(len(overrides)), "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0",
           "GIT_PAGER": "cat"}
    for i, (key, value) in enumerate(overrides):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def run(repo: Any, *args: str, check: bool = True) -> str:
    """``git ARGS`` in ``repo``'s work tree with :func:`safe_environment`; stdout, stripped."""
    git = _git_module()
    assert git is not None
    try:
        with repo.git.custom_environment(**safe_environment(repo)):
            out = repo.git.execute(["git", *args], with_extended_output=True, with_exceptions=False,
                                   kill_after_timeout=TIMEOUT, strip_newline_in_stdout=True)
    except (git.exc.GitCommandError, git.exc.GitCommandNotFound, OSError) as e:
        raise AdaptvcError(f"git {' '.join(args)} failed: {e}") from None
    status, stdout, stderr = out
    if check and status != 0:
        first = stderr.strip().splitlines()[0] if stderr.strip() else f"exit {status}"
        raise AdaptvcError(f"git {' '.join(args)} failed: {first}")
    return stdout.strip()


def work_tree(repo: Any) -> Path:
    return Path(repo.working_tree_dir)


def config_value(repo: Any, section: str, option: str) -> str | None:
    """A value from the repository's (and the user's) git config, read without running anything."""
    try:
        value = repo.config_reader().get_value(section, option, default=None)
    except Exception:
        return None
    return None if value is None else str(value)


def user_identity(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """git's ``user.name`` and ``user.email`` as seen from ``path`` (repository, global and system config).

    One ``git config`` process (a few ms), not GitPython (tens of ms of imports on every commit): reading
    config runs no command a repository's config could name."""
    if shutil.which("git") is None:
        return None, None
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat"}
    try:
        res = subprocess.run(["git", "config", "-z", "--get-regexp", r"^user\.(name|email)$"], cwd=folder,
                             env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None, None
    found: dict[str, str] = {}
    for entry in res.stdout[:65536].split(b"\0"):  # key NL value NUL; the last of each key wins, as in git
        key, _, value = entry.partition(b"\n")
        if key in (b"user.name", b"user.email") and value:
            found[key.decode()] = value.decode("utf-8", "replace")
    return found.get("user.name"), found.get("user.email")
