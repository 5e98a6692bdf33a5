"""``AdaptvcCallback``: every save (or epoch) of a ``transformers.Trainer`` becomes an adaptvc commit.

    trainer = Trainer(..., callbacks=[AdaptvcCallback(repo="runs/support-bot", on="save", tag_best="eval_loss")])

Each commit has the message ``epoch N (step M)`` and metadata ``{"step", "epoch", "metrics"}`` from the
trainer's log; the best version by ``tag_best`` is tagged ``best``. A failure inside the callback is logged
as a warning and training goes on: versioning must never cost a training run.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("AdaptvcCallback needs transformers: pip install 'adaptvc[torch]'") from e

from ..errors import NothingToCommitError
from ..repository import Repository

logger = logging.getLogger("adaptvc")
_SKIP = {"step", "epoch", "total_flos"}


def latest_metrics(log_history: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The latest value of every numeric metric logged up to ``step``."""
    out: dict[str, float] = {}
    for entry in log_history:
        if entry.get("step", 0) > step:
            continue
        for k, v in entry.items():
            if k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = float(v)
    return out


class AdaptvcCallback(TrainerCallback):
    """Commit the adapter on every checkpoint save (``on="save"``) or at the end of every epoch
    (``on="epoch"``; after that epoch's evaluation when ``eval_strategy="epoch"``).

    ``repo``: a :class:`Repository` or a path (created with ``adaptvc init`` if needed).
    ``tag_best``: a metric name (``eval_loss``); ``greater_is_better`` defaults to False for names containing
    "loss", else True. ``with_training_state`` (save mode) also keeps the optimizer, scheduler and RNG state of
    each checkpoint so training can resume from any version.
    """

    def __init__(self, repo: Repository | str | os.PathLike[str] = ".", on: str = "save",
                 tag_best: str | None = None, greater_is_better: bool | None = None,
                 adapter_name: str | None = None, with_training_state: bool = False) -> None:
        if on not in ("save", "epoch"):
            raise ValueError("on must be 'save' or 'epoch'")
        self._repo_arg = repo
        self._repo: Repository | None = repo if isinstance(repo, Repository) else None
        self.on = on
        self.tag_best = tag_best
        self.greater_is_better = greater_is_better if greater_is_better is not None else (
            tag_best is not None and "loss" not in tag_best)
        self.adapter_name = adapter_name
        self.with_training_state = with_training_state
        self._pending_epoch = False
        self.commits: list[str] = []

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            path = Path(self._repo_arg)
            self._repo = Repository(path, discover=False) if (path / ".adaptvc").is_dir() else \
                Repository.init(path, work_tree=False)
        return self._repo

    # -- Trainer events -------------------------------------------------------------------------------------
    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.on == "save":
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._safe_commit(state, checkpoint if checkpoint.is_dir() else model)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.on != "epoch":
            return
        strategy = getattr(args, "eval_strategy", "no")
        if getattr(strategy, "value", strategy) == "epoch":
            self._pending_epoch = True  # wait for this epoch's evaluation, which comes right after
        else:
            self._safe_commit(state, model)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._pending_epoch:
            self._pending_epoch = False
            self._safe_commit(state, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._pending_epoch:
            self._pending_epoch = False
            self._safe_commit(state, model)

    # -- committing -----------------------------------------------------------------------------------------
    def _safe_commit(self, state: Any, source: Any) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return  # under DDP every rank saves, but only the main process versions (as the Trainer saves)
        try:
            self._commit(state, source)
        except NothingToCommitError:
            logger.info("adaptvc: the adapter did not change since the last commit; nothing committed")
        except Exception as e:  # never let versioning kill a training run
            logger.warning("adaptvc: could not commit step %s (%s: %s); training goes on",
                           getattr(state, "global_step", "?"), type(e).__name__, e)

    def _commit(self, state: Any, source: Any) -> None:
        if source is None:
            raise ValueError("the Trainer passed no model and no checkpoint folder exists")
        step = int(state.global_step)
        epoch = float(state.epoch or 0.0)
        metrics = latest_metrics(list(state.log_history), step)
        message = f"epoch {epoch:g} (step {step})"
        is_folder = isinstance(source, (str, os.PathLike))
        commit = self.repo.commit(
            message, source, metadata={"step": step, "epoch": epoch, "metrics": metrics},
            adapter_name=None if is_folder else self.adapter_name,
            with_training_state=self.with_training_state and is_folder,
        )
        self.commits.append(commit.id)
        if self.tag_best and self.tag_best in metrics:
            self._maybe_tag_best(commit.id, metrics[self.tag_best])

    def _maybe_tag_best(self, commit_id: str, value: float) -> None:
        if math.isnan(value):
            return
        current = self.repo.tags().get("best")
        if current is not None:
            best = self.repo.store.read_commit(current).metadata.get("metrics", {}).get(self.tag_best)
            if isinstance(best, (int, float)) and (value <= best if self.greater_is_better else value >= best):
                return
        self.repo.tag("best", commit_id, force=True)
