"""``adaptvc.lock``: committed with the code, it names the adapter version that code produced.

``adaptvc pin [REV]`` writes it at the root of the code's git repository; the post-checkout and post-merge
hooks read it (as hostile input: it arrives with other people's code) to bring that version back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import AdaptvcError
from ..hashing import is_object_id
from ..parsing import JsonError, parse_json
from ..storage.atomic import read_file, write_atomic

LOCK_NAME = "adaptvc.lock"
MAX_LOCK_FILE = 1 << 16


def write_lock(git_top: Path, work_tree: Path, commit: str, rev: str) -> Path:
    rel = os.path.relpath(work_tree.resolve(), git_top.resolve())
    if rel.startswith(".."):
        raise AdaptvcError(f"the adaptvc repository {work_tree} is outside the git repository {git_top}")
    data = {"format": 1, "work_tree": Path(rel).as_posix(), "commit": commit, "rev": rev}
    write_atomic(git_top, LOCK_NAME, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return git_top / LOCK_NAME


def read_lock(git_top: Path) -> tuple[Path, str] | None:
    """(adaptvc work tree, commit id) named by the lock file, checked as hostile input; None when absent."""
    try:
        raw = read_file(git_top, LOCK_NAME, MAX_LOCK_FILE)
        if raw is None:
            return None
        data = parse_json(raw)
    except (OSError, ValueError, JsonError) as e:
        raise AdaptvcError(f"{LOCK_NAME} cannot be read ({e})") from None
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
