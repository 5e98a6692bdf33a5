"""Reading text that came from a file, a remote, argv or the environment: bounded and checked, in one place.

Every JSON document adaptvc reads from outside goes through :func:`parse_json`: its size is bounded before it
is decoded, its nesting depth is bounded (a document nested 100,000 deep must be a one-line error, not a
``RecursionError``), and it must be UTF-8. Every string that will be stored or used as a name goes through
:func:`check_text` (a lone surrogate, which is what undecodable argv bytes become, cannot be encoded).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidInputError, InvalidTextError

#: deeper than any adapter config, commit or metadata adaptvc writes
MAX_JSON_DEPTH = 64
#: the only way JSON text decodes to a lone surrogate: a \uD800–\uDFFF escape
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonError(ValueError):
    """A document that is not acceptable JSON; ``str()`` says why, in a few words."""


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when no list or dict in ``value`` is nested deeper than ``limit`` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > limit:
                return False
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            if depth > limit:
                return False
            stack.extend((x, depth + 1) for x in v)
    return True


def parse_json(data: bytes | str, max_bytes: int | None = None, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON document from an untrusted source, or raise :class:`JsonError`."""
    if max_bytes is not None and len(data) > max_bytes:
        raise JsonError(f"larger than {max_bytes} bytes")
    text: bytes | str = data
    if isinstance(data, bytes):  # decoded here: json.loads would first guess the encoding of every document
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data  # json.loads reads UTF-16/32 itself, and refuses what is neither
        else:
            if text.startswith("\ufeff"):  # a UTF-8 byte-order mark, which json.loads skips in bytes
                text = text[1:]
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonError("nested too deeply") from None
    except UnicodeDecodeError:
        raise JsonError("not UTF-8") from None
    except ValueError as e:
        raise JsonError(f"not valid JSON ({e})") from None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # the walks below are needed only when the text could hold what they look for (fast for the usual case)
    if raw.count(b"[") + raw.count(b"{") > max_depth and not json_depth_ok(value, max_depth):
        raise JsonError(f"nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(raw) and not text_ok(value):
        raise JsonError("holds a string that is not valid Unicode")
    return value


def text_ok(value: Any) -> bool:
    """True when every string in ``value`` (keys included) can be encoded as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return True


def check_text(value: Any, what: str) -> Any:
    """``value`` unchanged if all its strings are valid Unicode; else :class:`InvalidTextError` naming ``what``."""
    if not text_ok(value):
        raise InvalidTextError(what)
    return value


def check_json_value(value: Any, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Metadata given by a caller: valid Unicode, bounded depth, representable as JSON."""
    check_text(value, what)
    if not json_depth_ok(value, max_depth):
        raise InvalidInputError(what, f"is nested deeper than {max_depth} levels")
    return value
