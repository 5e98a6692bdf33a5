"""adaptvc: version control for PEFT adapters.

The public names are imported on first use, so ``import adaptvc`` (and the command line) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    "AdaptvcError": "adaptvc.errors",
    "BasePin": "adaptvc.objects",
    "Commit": "adaptvc.objects",
    "Snapshot": "adaptvc.objects",
    "Repository": "adaptvc.repository",
    "Version": "adaptvc.repository",
    "load": "adaptvc.repository",
    "Status": "adaptvc.ops.status",
    "hotswap": "adaptvc.serving.hotswap",
}

__all__ = ["AdaptvcError", "BasePin", "Commit", "Repository", "Snapshot", "Status", "Version", "__version__", "hotswap",
           "load"]

if TYPE_CHECKING:
    from .errors import AdaptvcError
    from .objects import BasePin, Commit, Snapshot
    from .ops.status import Status
    from .repository import Repository, Version, load
    from .serving.hotswap import hotswap


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adaptvc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
