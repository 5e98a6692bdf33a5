"""Remotes: where versions are pushed to and fetched from.

``open_remote(url)`` picks the implementation from the URL: ``hf://user/repo`` is a Hugging Face Hub
repository; a path or ``file://`` URL is a bare adaptvc store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import NonFastForwardError, RefUpdate, Remote, RemoteError

if TYPE_CHECKING:
    from ..store import ObjectStore

__all__ = ["NonFastForwardError", "RefUpdate", "Remote", "RemoteError", "open_remote"]


def open_remote(url: str, name: str = "origin", local: ObjectStore | None = None) -> Remote:
    """The remote at ``url``. ``local`` is the store that a Hub repository never pushed by adaptvc is
    imported into while its refs are listed."""
    if url.startswith("hf://"):
        from .hub import HubRemote

        return HubRemote(url, name, local)
    if "://" in url and not url.startswith("file://"):
        raise RemoteError(f"unsupported remote URL {url!r}: use hf://USER/REPO, a folder path or file://PATH")
    from .directory import DirectoryRemote

    return DirectoryRemote(url, name)
