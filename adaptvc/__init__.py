"""adaptvc: version control for PEFT adapters."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AdaptvcError
from .live import load
from .objects import BasePin, Commit, Snapshot
from .repository import Repository, Version
from .status import Status

__all__ = ["AdaptvcError", "BasePin", "Commit", "Repository", "Snapshot", "Status", "Version", "__version__", "load"]
