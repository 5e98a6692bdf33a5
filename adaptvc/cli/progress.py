"""A tqdm progress bar for long work, shown on stderr only when it is a terminal."""

from __future__ import annotations

import sys

from ..progress import Progress


class BarProgress(Progress):
    #: Work smaller than this finishes before a bar would be worth drawing.
    MIN_BYTES = 32 << 20
    #: sizes are decimal everywhere (MB = 10^6 bytes), as ``human_bytes`` prints them
    UNIT_DIVISOR = 1000

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None

    def begin(self, description: str, total: int) -> None:
        if not self.enabled or total < self.MIN_BYTES:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=self.UNIT_DIVISOR,
                         leave=False, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
