"""Integrations with the world around an adapter: training loops and git.

``AdaptvcCallback`` (a ``transformers.TrainerCallback``) is imported on first use, so importing adaptvc
never imports transformers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdaptvcCallback"]


def __getattr__(name: str) -> Any:
    if name == "AdaptvcCallback":
        from .trainer import AdaptvcCallback

        return AdaptvcCallback
    raise AttributeError(name)
