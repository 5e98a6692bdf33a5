"""Interleaved rounds: every subject and its reference run in the same round, in a shuffled order, and each
result is a ratio (or difference) taken within one round. The median of those per-round figures, with its
p25–p75, is what a noisy shared machine can tell us; a figure compared across rounds is not.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measured:
    seconds: float
    peak_kb: int = 0


@dataclass
class Stat:
    """The median and p25–p75 of per-round values (ratios, differences or seconds)."""

    median: float
    p25: float
    p75: float
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        xs = sorted(values)
        if not xs:
            return cls(float("nan"), float("nan"), float("nan"), 0, [])
        if len(xs) == 1:
            return cls(xs[0], xs[0], xs[0], 1, xs)
        q = statistics.quantiles(xs, n=4, method="inclusive")
        return cls(statistics.median(xs), q[0], q[2], len(xs), xs)

    def to_json(self) -> dict:
        return {"median": self.median, "p25": self.p25, "p75": self.p75, "n": self.n, "values": self.values}


def bench_env() -> dict[str, str]:
    """The environment subjects run in: as a user's (byte-code caches used), offline, no pager, no colour."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "ADAPTVC_PAGER": "cat", "PAGER": "cat"})
    return env


#: GNU time, when installed, for the peak RSS of a command: the high-water mark of a child forked from this
#: (large) process starts at this process's own, so ``wait4``'s rusage here would overstate it.
GNU_TIME = shutil.which("time") if Path("/usr/bin/time").exists() else None


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            ok: tuple[int, ...] = (0,)) -> Measured:
    """Wall time and peak RSS of one process."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as t:
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", t.name, *cmd] if GNU_TIME else cmd
        start = time.perf_counter()
        res = subprocess.run(wrapped, env=env or bench_env(), cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
        try:
            peak = int(Path(t.name).read_text().split()[-1]) if GNU_TIME else 0
        except (ValueError, IndexError):
            peak = 0
    if res.returncode not in ok:
        err = res.stderr.decode("utf-8", "replace")
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): {err.strip()[-500:]}")
    return Measured(seconds, peak)


Trial = Callable[[int], Measured | float]


def run_rounds(trials: dict[str, Trial], rounds: int, seed: int = 0, between: Callable[[int], None] | None = None,
               log: Callable[[str], None] = print) -> dict[str, list[Measured]]:
    """Run every trial once per round, in a new random order each round; {trial: [result of each round]}.
    A trial gets the round's number (so it can use that round's input). ``between`` runs after each round
    (clean-up, untimed)."""
    rng = random.Random(seed)
    out: dict[str, list[Measured]] = {name: [] for name in trials}
    for k in range(rounds):
        order = list(trials)
        rng.shuffle(order)
        started = time.perf_counter()
        for name in order:
            r = trials[name](k)
            out[name].append(r if isinstance(r, Measured) else Measured(float(r)))
        if between is not None:
            between(k)
        log(f"  round {k + 1}/{rounds}: {time.perf_counter() - started:.1f} s")
    return out


def ratios(subject: list[Measured], reference: list[Measured]) -> Stat:
    return Stat.of([s.seconds / r.seconds for s, r in zip(subject, reference, strict=True)])


def differences(subject: list[Measured], reference: list[Measured]) -> Stat:
    return Stat.of([s.seconds - r.seconds for s, r in zip(subject, reference, strict=True)])


def seconds(subject: list[Measured]) -> Stat:
    return Stat.of([s.seconds for s in subject])


def best_of(n: int, fn: Callable[[], Measured]) -> Measured:
    """The fastest of ``n`` runs, for commands of a few tens of ms (one run is mostly scheduler noise)."""
    runs = [fn() for _ in range(n)]
    return min(runs, key=lambda m: m.seconds)
