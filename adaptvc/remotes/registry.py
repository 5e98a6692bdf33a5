"""Which remote a URL names: one registry of URL schemes, and the one place that tells a URL from a name.

``hf://user/repo`` is a Hugging Face Hub repository; a path or ``file://PATH`` is a bare adaptvc store in a
folder. A new kind of remote registers its scheme here (the implementation is imported only when used).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Remote, RemoteError

if TYPE_CHECKING:
    from ..storage.base import ObjectStore

#: scheme -> "module:class"; a class takes (url, name, local store)
SCHEMES: dict[str, str] = {
    "hf": "adaptvc.remotes.hub:HubRemote",
    "file": "adaptvc.remotes.directory:DirectoryRemote",
    "s3": "adaptvc.remotes.objectstore:ObjectStoreRemote",
    "az": "adaptvc.remotes.objectstore:ObjectStoreRemote",
}


def register(scheme: str, target: str) -> None:
    SCHEMES[scheme] = target


def scheme_of(url: str) -> str | None:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isalnum() else None


def looks_like_url(text: str) -> bool:
    """A URL or a folder path, as opposed to the name of a configured remote."""
    return scheme_of(text) is not None or text.startswith(("/", "./", "../", "~")) or text in (".", "..") \
        or "/" in text


def normalise(url: str, cwd: Path) -> str:
    """A relative folder becomes absolute (so it works from anywhere); URLs are left as they are."""
    if scheme_of(url) is None and not url.startswith(("/", "~")):
        return str((cwd / url).resolve())
    return url


def open_remote(url: str, name: str = "origin", local: ObjectStore | None = None) -> Remote:
    """The remote at ``url``. ``local`` is the store a Hub repository never pushed by adaptvc is imported
    into while its refs are listed."""
    if not isinstance(url, str) or not url or "\x00" in url:
        raise RemoteError(f"invalid remote URL {url!r}")
    scheme = scheme_of(url)
    if scheme is None and "://" in url:
        raise RemoteError(f"unsupported remote URL {url!r}")
    target = SCHEMES.get(scheme or "file")
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise RemoteError(f"unsupported remote URL {url!r}: use one of {known}, or a folder path")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(url, name, local)


def default_clone_folder(url: str) -> str:
    return os.path.basename(url.rstrip("/")) or "adapter"
