"""Each adaptvc commit made inside a git work tree records ``{"git_commit", "dirty", "branch"}`` of the code —
never a path or a remote URL: those leak disks and credentials."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from typing import Any

from ..errors import AdaptvcError
from ..parsing import check_text
from . import gitcmd


def code_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"git_commit", "dirty", "branch"}`` of the git repository containing ``path``, or None."""
    repo = gitcmd.open_repo(path)
    if repo is None:
        return None
    try:
        commit = repo.head.commit.hexsha if repo.head.is_valid() else None
        branch = None if repo.head.is_detached else repo.head.reference.name
        dirty = bool(gitcmd.run(repo, "status", "--porcelain", "--untracked-files=no", check=False))
    except (AdaptvcError, ValueError, TypeError, OSError):
        return None
    except Exception:  # GitPython raises its own types for a damaged repository: provenance is optional
        return None
    return {"git_commit": commit, "dirty": dirty, "branch": branch}


def default_author(path: str | os.PathLike[str] = ".") -> str:
    """``ADAPTVC_AUTHOR``, else git's ``user.name <user.email>`` (one ``git config`` read, nothing configured runs),
    else ``user@host``."""
    env = os.environ.get("ADAPTVC_AUTHOR")
    if env:
        return check_text(env, "ADAPTVC_AUTHOR")
    name, email = gitcmd.user_identity(path)
    if name:
        return f"{name} <{email}>" if email else name
    with contextlib.suppress(Exception):
        return f"{getpass.getuser()}@{socket.gethostname()}"
    return "unknown"
