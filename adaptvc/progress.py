"""Progress reporting: the library reports through this interface and is silent by default; the CLI
plugs in a progress bar."""

from __future__ import annotations


class Progress:
    """Receives ``begin(description, total_bytes)``, any number of ``update(bytes)``, then ``end()``."""

    def begin(self, description: str, total: int) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def end(self) -> None:
        pass


SILENT = Progress()
