"""Comparisons computed once, in the background, and kept: the UI's diff cache.

A page asks for the diff of two commit ids; the first request queues it and answers with its progress
(bytes of tensors read so far, of the bytes the diff plans to read), later requests get the same
progress until the result is ready, then the result itself, from the cache, for as long as it stays in it.
One worker thread computes (the numpy work would not go faster on two), with its own ``Repository``: a
store object is not shared between threads. The cache is bounded by entries and by bytes (least recently
used out first).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AdaptvcError
from ..progress import Progress
from .data import heatmap

if TYPE_CHECKING:
    from ..repository import Repository

Key = tuple[str, str]


class QueueFullError(AdaptvcError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} comparisons are already waiting; try again when they are done")


class JobProgress(Progress):
    """The progress of the comparison being computed, read by the request threads."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def begin(self, description: str, total: int) -> None:
        self.total, self.done = total, 0

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + n)

    def end(self) -> None:
        self.done = self.total


@dataclass(frozen=True)
class DiffResult:
    """A finished comparison: ``body`` is the JSON the diff endpoint sends (``{"state": "done", "diff":
    Diff.to_dict(), "heatmap": heatmap(diff)}``), ``heat`` the heat map alone (for the run view)."""

    body: bytes
    heat: dict[str, Any]


def json_bytes(data: Any) -> bytes:
    """Compact JSON; a NaN or infinity that slipped into free-form metadata becomes null."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class DiffJobs:
    """Diffs of commit pairs, computed by one background thread and kept in a bounded LRU cache."""

    def __init__(self, open_repo: Callable[[], Repository], max_entries: int = 256, max_bytes: int = 256 << 20,
                 max_pending: int = 128) -> None:
        self._open_repo = open_repo
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self._lock = threading.Condition()
        self._done: OrderedDict[Key, DiffResult] = OrderedDict()
        self._bytes = 0
        self._queue: deque[Key] = deque()
        self._errors: dict[Key, str] = {}
        self._current: Key | None = None
        self._progress = JobProgress()
        self._stop = False
        self.computed = 0  # how many diffs were computed (the tests check the cache with it)
        self._thread = threading.Thread(target=self._work, name="adaptvc-ui-diff", daemon=True)
        self._thread.start()

    def poll(self, a: str, b: str) -> tuple[str, Any]:
        """``("done", DiffResult)``, ``("running", {"done", "total", "queued"})`` (queued first if new) or
        ``("error", message)`` (reported once; the next poll tries again)."""
        key = (a, b)
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return "done", self._done[key]
            if key in self._errors:
                return "error", self._errors.pop(key)
            if key == self._current:
                return "running", {"done": self._progress.done, "total": self._progress.total, "queued": 0}
            if key not in self._queue:
                if len(self._queue) >= self.max_pending:
                    raise QueueFullError(self.max_pending)
                self._queue.append(key)
                self._lock.notify()
            return "running", {"done": 0, "total": 0, "queued": self._queue.index(key) + 1}

    def cached(self, a: str, b: str) -> DiffResult | None:
        with self._lock:
            return self._done.get((a, b))

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout=5)

    def _work(self) -> None:
        repo: Repository | None = None
        while True:
            with self._lock:
                while not self._queue and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                key = self._queue.popleft()
                self._current = key
                self._progress = JobProgress()
                progress = self._progress
            result: DiffResult | None = None
            error = ""
            try:
                repo = repo or self._open_repo()
                diff = repo.diff(key[0], key[1], progress=progress)  # what `diff --json` prints
                heat = heatmap(diff)
                result = DiffResult(json_bytes({"state": "done", "diff": diff.to_dict(), "heatmap": heat}), heat)
            except AdaptvcError as e:
                error = str(e)
            except MemoryError:
                error = "out of memory while comparing these versions"
            except Exception as e:  # the page gets one line; the server goes on
                text = (str(e).strip().splitlines() or [""])[0]
                error = f"internal error ({type(e).__name__}: {text}); this is a bug in adaptvc, please report it"
            with self._lock:
                self._current = None
                if result is None:
                    self._errors[key] = error
                    while len(self._errors) > self.max_pending:  # errors nobody came back for
                        self._errors.pop(next(iter(self._errors)))
                    continue
                self.computed += 1
                self._done[key] = result
                self._bytes += len(result.body)
                while len(self._done) > 1 and (len(self._done) > self.max_entries or self._bytes > self.max_bytes):
                    _, old = self._done.popitem(last=False)
                    self._bytes -= len(old.body)
