"""``adaptvc.hotswap(model, "runs/bot", rev="v4")``: put a version into a live PeftModel without reloading it.

See :mod:`adaptvc.serving.swap` for what is swapped and what is refused.
"""

from __future__ import annotations

import os
from typing import Any

from ..peft_layout import CONFIG_NAME
from ..repository import Repository
from .swap import HotswapRefusedError, SwapResult, hotswap_from_store

__all__ = ["HotswapRefusedError", "SwapResult", "hotswap"]


def hotswap(peft_model: Any, repository: str | os.PathLike[str] | Repository = ".", rev: str = "HEAD",
            adapter_name: str = "default", *, subfolder: str | None = None, force: bool = False) -> SwapResult:
    """Swap the weights of adapter ``adapter_name`` of the live ``peft_model`` for version ``rev`` of
    ``repository`` (a path or a :class:`~adaptvc.Repository`), in place, with PEFT's hotswap: no reload, and
    the outputs equal ``PeftModel.from_pretrained`` of that version's checkout. Refuses, changing nothing, what
    PEFT's hotswap cannot do (another PEFT type, incompatible config, new target modules, a larger rank, a
    merged adapter, a base model that does not match the version's pin unless ``force``).

    >>> model = adaptvc.load(base, "runs/bot", rev="v3")        # doctest: +SKIP
    >>> adaptvc.hotswap(model, "runs/bot", rev="v4")            # doctest: +SKIP
    """
    repo = repository if isinstance(repository, Repository) else Repository(repository)
    version = repo.show(rev)
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    config = repo.config_at(version.snapshot, prefix + CONFIG_NAME)
    return hotswap_from_store(peft_model, repo.store, version.commit, version.snapshot, config,
                              adapter_name=adapter_name, subfolder=subfolder, force=force)
