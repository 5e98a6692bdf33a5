"""Ref names: where branches, tags and remote-tracking branches live, and which names are acceptable.

Names come from argv and from remotes, so they are checked like git's ``check-ref-format`` before they are
used as a path or sent anywhere.
"""

from __future__ import annotations

import re

from .errors import InvalidRefNameError
from .hashing import is_object_id

HEADS = "refs/heads/"
TAGS = "refs/tags/"
REMOTES = "refs/remotes/"  # refs/remotes/<remote>/<branch>: where a remote's branches were at the last fetch
PREFIXES = (HEADS, TAGS, REMOTES)
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_ref_name(name: str, kind: str = "name") -> str:
    """Refuse names git would refuse (``git check-ref-format``), plus names that read as ids or options."""
    def bad(reason: str) -> InvalidRefNameError:
        return InvalidRefNameError(name, f"a {kind} {reason}")

    if not isinstance(name, str) or not name:
        raise bad("cannot be empty")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise InvalidRefNameError(name.encode("utf-8", "replace").decode(), f"a {kind} must be valid UTF-8") \
            from None
    if len(encoded) > 200:
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


def check_full_ref(ref: str) -> str:
    """``HEAD`` or a full ref (``refs/heads/x``, ``refs/tags/x``, ``refs/remotes/<remote>/x``)."""
    if ref == "HEAD":
        return ref
    prefix = next((p for p in PREFIXES if isinstance(ref, str) and ref.startswith(p)), None)
    if prefix is None:
        raise InvalidRefNameError(str(ref), "refs live under refs/heads/, refs/tags/ or refs/remotes/")
    check_ref_name(ref[len(prefix):])
    if prefix == REMOTES and "/" not in ref[len(prefix):]:
        raise InvalidRefNameError(ref, "a remote-tracking ref is refs/remotes/<remote>/<branch>")
    return ref


def is_valid_full_ref(ref: str) -> bool:
    try:
        check_full_ref(ref)
    except InvalidRefNameError:
        return False
    return True
