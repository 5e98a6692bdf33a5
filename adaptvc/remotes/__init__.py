"""Remotes: where versions are pushed to and fetched from (see :mod:`.registry` for which URL is which)."""

from __future__ import annotations

from .base import NonFastForwardError, RefUpdate, Remote, RemoteError
from .registry import open_remote

__all__ = ["NonFastForwardError", "RefUpdate", "Remote", "RemoteError", "open_remote"]
