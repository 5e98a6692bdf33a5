"""What the work tree's commits leave out: ``.adaptvcignore`` and ``.adaptvc/info/exclude``, in gitignore syntax.

The patterns are gitignore's, matched by the ``pathspec`` library (``GitIgnoreSpec``: git's own rules,
last match wins, ``!`` re-includes, a trailing ``/`` matches folders only). ``info/exclude`` is read first
and ``.adaptvcignore`` after it, so the file in the work tree has the last word, as in git. Only what a
commit could capture is matched against them — adapter sub-folders (``serve/``), companion files
(``README.md``, tokenizer files) and training state; the top-level ``adapter_config.json`` and
``adapter_model.safetensors`` are the adapter itself and are never ignored.

Both files are hostile input: bounded in size and line length; a line that is not a valid pattern, or whose
wildcards could make matching slow (more than three ``*`` in one path segment), is skipped with a warning
naming it.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AdaptvcWarning, InvalidInputError, SymlinkRefusedError
from ..peft_layout import is_adapter_folder_name
from ..storage.atomic import read_file, write_atomic

IGNORE_FILE = ".adaptvcignore"
EXCLUDE_FILE = "info/exclude"  # below the repository's own folder
MAX_IGNORE_FILE = 1 << 20
MAX_PATTERN = 1024
MAX_PATTERNS = 10_000
#: ``*`` wildcards allowed in one path segment of a pattern: the matcher backtracks, and each more ``*``
#: multiplies the time a long name can take by its length
MAX_STARS_PER_SEGMENT = 3


@dataclass(frozen=True)
class IgnoreRules:
    """The ignore patterns of one work tree; call ``rules.ignored("serve/")`` (a trailing ``/`` for a folder)."""

    patterns: tuple[str, ...]
    spec: Any = None  # a pathspec.GitIgnoreSpec, or None when there are no patterns

    def ignored(self, rel: str) -> bool:
        """Whether the work-tree path ``rel`` (POSIX, relative; ending in ``/`` for a folder) is ignored."""
        return self.spec is not None and bool(self.spec.match_file(rel))

    __call__ = ignored


def _lines(root: Path, rel: str, label: str) -> list[tuple[str, int, str]]:
    try:
        data = read_file(root, rel, MAX_IGNORE_FILE)
    except SymlinkRefusedError:  # (a ValueError too: first)
        raise SymlinkRefusedError(label) from None
    except ValueError:
        raise InvalidInputError(label, f"is larger than {MAX_IGNORE_FILE:,} bytes") from None
    except IsADirectoryError:
        return []
    if data is None:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(label, "is not valid UTF-8 text") from None
    return [(label, i, line) for i, line in enumerate(text.splitlines(), 1)]


def _problem(line: str) -> str | None:
    if len(line) > MAX_PATTERN:
        return f"longer than {MAX_PATTERN} characters"
    if any(ord(c) < 32 and c != "\t" for c in line):
        return "holds a control character"
    for segment in line.split("/"):
        if segment != "**" and segment.count("*") > MAX_STARS_PER_SEGMENT:
            return f"more than {MAX_STARS_PER_SEGMENT} '*' in one path segment"
    return None


def load_ignore(work_tree: str | os.PathLike[str], admin_dir: str | os.PathLike[str] | None = None) -> IgnoreRules:
    """The rules of ``work_tree``: ``admin_dir/info/exclude`` then ``work_tree/.adaptvcignore``."""
    lines: list[tuple[str, int, str]] = []
    if admin_dir is not None:
        lines += _lines(Path(admin_dir), EXCLUDE_FILE, f"{Path(admin_dir).name}/{EXCLUDE_FILE}")
    lines += _lines(Path(work_tree), IGNORE_FILE, IGNORE_FILE)
    meaningful = [(src, n, line) for src, n, line in lines if line.strip() and not line.startswith("#")]
    if not meaningful:
        return IgnoreRules(())
    if len(meaningful) > MAX_PATTERNS:
        raise InvalidInputError("the ignore files", f"hold more than {MAX_PATTERNS} patterns")
    import pathspec

    kept: list[str] = []
    for src, n, line in meaningful:
        problem = _problem(line)
        if problem is None:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except Exception as e:  # pathspec raises its own errors and re.error for a bad pattern
                problem = f"not a valid pattern ({type(e).__name__})"
        if problem is not None:
            warnings.warn(f"{src}:{n}: pattern skipped: {problem}", AdaptvcWarning, stacklevel=2)
            continue
        kept.append(line)
    spec = pathspec.GitIgnoreSpec.from_lines(kept) if kept else None
    return IgnoreRules(tuple(kept), spec)


def ignore_for(folder: str | os.PathLike[str], work_tree: Path, admin_dir: Path) -> Callable[[str], bool] | None:
    """The rules to apply when capturing ``folder``: the work tree's, or None for any other folder
    (``commit --from DIR`` captures DIR as it is)."""
    try:
        same = Path(folder).resolve() == work_tree.resolve()
    except OSError:
        same = False
    if not same:
        return None
    rules = load_ignore(work_tree, admin_dir)
    return rules if rules.spec is not None else None


_SPECIAL = re.compile(r"([\\*?\[])")


def escape(name: str) -> str:
    """A literal name as a gitignore pattern (wildcards, a leading ``!``/``#`` and trailing spaces escaped)."""
    out = _SPECIAL.sub(r"\\\1", name)
    if out.startswith(("!", "#")):
        out = "\\" + out
    stripped = out.rstrip(" ")
    return stripped + "\\ " * (len(out) - len(stripped))


def exclude_checkout_dir(work_tree: Path, admin_dir: Path, out: str | os.PathLike[str]) -> str | None:
    """Before ``checkout -o DIR`` writes an adapter into a folder of the work tree (the README's ``serve/``),
    add ``/DIR/`` to ``info/exclude`` so the next commit does not capture it as a sub-adapter. Returns the
    pattern added, or None when nothing was needed (DIR is elsewhere, deeper than a commit looks, or
    already ignored)."""
    try:
        rel = Path(out).resolve().relative_to(work_tree.resolve())
    except (ValueError, OSError):
        return None
    parts = rel.parts
    if len(parts) != 1 or not is_adapter_folder_name(parts[0]):
        return None  # the work tree itself, or a folder a commit never looks into
    name = parts[0]
    if load_ignore(work_tree, admin_dir).ignored(name + "/"):
        return None
    pattern = f"/{escape(name)}/"
    try:
        existing = read_file(admin_dir, EXCLUDE_FILE, MAX_IGNORE_FILE) or b""
    except SymlinkRefusedError:
        raise SymlinkRefusedError(f"{admin_dir.name}/{EXCLUDE_FILE}", writing=True) from None
    except ValueError:
        raise InvalidInputError(f"{admin_dir.name}/{EXCLUDE_FILE}", f"is larger than {MAX_IGNORE_FILE:,} bytes") \
            from None
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    header = b"" if existing else b"# folders adaptvc checked out into (checkout -o): not part of the adapter\n"
    write_atomic(admin_dir, EXCLUDE_FILE, existing + header + pattern.encode() + b"\n")
    return pattern
