"""Progress reporting: the library reports through this interface and is silent by default; the CLI plugs in
a progress bar.

The contract, for every long piece of work (a commit's hashing, a checkout, a push, a fetch, gc's
compression): ``begin(description, total)`` once with the total number of units (bytes) known up front, then
``update(n)`` as units are done (their sum never exceeds ``total``), then ``end()`` — also when the work
fails. :class:`ContractCheck` records a run and says where the contract was broken (the tests use it on every
transfer, so a bar that never shows or never ends is a failing test).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Progress:
    """Receives ``begin(description, total_bytes)``, any number of ``update(bytes)``, then ``end()``."""

    def begin(self, description: str, total: int) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def end(self) -> None:
        pass


SILENT = Progress()


class Serialised(Progress):
    """Passes calls on to ``inner`` one at a time: for work done on several threads at once."""

    def __init__(self, inner: Progress) -> None:
        import threading

        self.inner = inner
        self._lock = threading.Lock()

    def begin(self, description: str, total: int) -> None:
        with self._lock:
            self.inner.begin(description, total)

    def update(self, n: int) -> None:
        with self._lock:
            self.inner.update(n)

    def end(self) -> None:
        with self._lock:
            self.inner.end()


@dataclass
class Task:
    description: str
    total: int
    done: int = 0
    ended: bool = False


@dataclass
class ContractCheck(Progress):
    """A Progress that records every task and checks the contract."""

    tasks: list[Task] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def current(self) -> Task | None:
        return self.tasks[-1] if self.tasks and not self.tasks[-1].ended else None

    def begin(self, description: str, total: int) -> None:
        if self.current is not None:
            self.errors.append(f"begin({description!r}) while {self.current.description!r} has not ended")
        if total < 0:
            self.errors.append(f"begin({description!r}) with a negative total")
        self.tasks.append(Task(description, total))

    def update(self, n: int) -> None:
        task = self.current
        if task is None:
            self.errors.append("update() outside a task")
            return
        task.done += n
        if task.done > task.total:
            self.errors.append(f"{task.description!r}: {task.done} done of a total of {task.total}")

    def end(self) -> None:
        task = self.current
        if task is None:
            self.errors.append("end() outside a task")
            return
        task.ended = True

    def problems(self) -> list[str]:
        """What broke the contract: the recorded errors, and tasks that never ended."""
        return self.errors + [f"{t.description!r} never ended" for t in self.tasks if not t.ended]

    def task(self, description: str) -> Task | None:
        return next((t for t in self.tasks if t.description == description), None)
