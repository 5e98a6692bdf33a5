"""The contract every remote keeps (a bare store in a folder, the Hugging Face Hub, ...).

Everything a remote says is hostile until checked: ref names are checked like local ones (a name that
cannot be a local ref is skipped), every object is re-hashed on arrival, every snapshot is checked against
the adapter layout rule before anything it names is fetched, metadata is bounded in size and depth, and
every failure (a refused request, an unreachable server) reaches the user as one :class:`RemoteError` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import AdaptvcError
from ..progress import SILENT, Progress
from ..refnames import HEADS
from ..storage.base import ObjectStore


class RemoteError(AdaptvcError):
    pass


class NonFastForwardError(RemoteError):
    def __init__(self, ref: str, remote: str) -> None:
        self.ref = ref
        super().__init__(f"the remote has changes you don't have on {ref}: run 'adaptvc pull {remote}' first "
                         "(nothing was overwritten)")


@dataclass(frozen=True)
class RefUpdate:
    """Move ``ref`` on the remote from ``old`` (None: absent) to ``new`` (an adaptvc commit id)."""

    ref: str
    old: str | None
    new: str


class Remote(ABC):
    """A place adaptvc versions can be pushed to and fetched from. Refs are full names (``refs/heads/main``,
    ``refs/tags/v1``) mapped to adaptvc commit ids; every object that arrives is checked against its id."""

    url: str
    name: str
    #: refs the remote holds under names that cannot be local refs (listed, never used)
    skipped_refs: list[str]
    #: refs whose content cannot be read (garbage, a link, not a commit id): ref -> what is wrong
    unreadable_refs: dict[str, str] = {}  # noqa: RUF012 (replaced per instance by list_refs)

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def create(self, private: bool = False) -> None:
        """Create an empty remote (a bare store, a Hub repository)."""

    @abstractmethod
    def list_refs(self) -> dict[str, str]: ...

    def missing_hint(self) -> str:
        """What to say after "nothing at URL" (e.g. how to log in to see a private repository)."""
        return ""

    def default_branch(self) -> str | None:
        refs = self.list_refs()
        if HEADS + "main" in refs:
            return "main"
        branches = sorted(r[len(HEADS):] for r in refs if r.startswith(HEADS))
        return branches[0] if branches else None

    @abstractmethod
    def download(self, store: ObjectStore, commits: list[str], progress: Progress = SILENT) -> int:
        """Make ``store`` hold these commits and everything they reach; return the bytes transferred."""

    @abstractmethod
    def upload(self, store: ObjectStore, updates: list[RefUpdate], progress: Progress = SILENT) -> int:
        """Send what the remote lacks for ``updates``, then move each ref by compare-and-swap; raise
        :class:`NonFastForwardError` if a ref is no longer at ``old``. Returns the bytes transferred."""
