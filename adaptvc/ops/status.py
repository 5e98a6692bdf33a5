"""Which tensors and files differ between two snapshots, decided by ids alone (no tensor is read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..objects import Snapshot
from ..peft_layout import CONFIG_NAME, SET_VALUED_CONFIG_KEYS


@dataclass(frozen=True)
class Status:
    """How a snapshot (usually the work tree) differs from a commit (usually HEAD).

    Tensor names are qualified as in :meth:`Snapshot.tensors`; file lists cover every file of the
    snapshot, adapter weights included."""

    head: str | None
    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    config_changed: bool = False
    files_modified: list[str] = field(default_factory=list)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    #: top-level keys of adapter_config.json that differ (``folder/key`` for a sub-folder adapter)
    config_keys: list[str] = field(default_factory=list)
    #: what the user should know about the folder compared (no adapter in it, and why; no work tree)
    note: str | None = None

    @property
    def clean(self) -> bool:
        return not (self.modified or self.added or self.removed or self.config_changed
                    or self.files_modified or self.files_added or self.files_removed)

    @property
    def changed_paths(self) -> list[str]:
        return sorted(self.files_modified + self.files_added + self.files_removed)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "clean": self.clean,
            "head": self.head,
            "modified": self.modified,
            "added": self.added,
            "removed": self.removed,
            "config_changed": self.config_changed,
            "config_keys": self.config_keys,
            "files": {"modified": self.files_modified, "added": self.files_added,
                      "removed": self.files_removed},
        }
        if self.note is not None:  # only when there is something to say (the documented keys stay as they are)
            out["note"] = self.note
        return out


def _meaning(key: str, value: Any) -> Any:
    """A config value as PEFT means it: set-valued keys (``target_modules``…) compare as sets."""
    if key in SET_VALUED_CONFIG_KEYS and isinstance(value, list):
        try:
            return sorted(set(value), key=repr)
        except TypeError:  # unhashable items: keep the list as it is
            return value
    return value


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """``{key: [old, new]}`` for every top-level key whose meaning differs (a missing key reads as None; the
    order of a set-valued list such as ``target_modules`` is not a change)."""
    return {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys())
            if _meaning(k, old.get(k)) != _meaning(k, new.get(k))}


def compare_snapshots(old: Snapshot | None, new: Snapshot, head: str | None = None) -> Status:
    old_files = {f.path: f for f in old.files} if old else {}
    new_files = {f.path: f for f in new.files}
    old_tensors = dict(old.tensors()) if old else {}
    new_tensors = dict(new.tensors())

    def differs(a, b) -> bool:
        return (a.blob, a.dtype, a.shape) != (b.blob, b.dtype, b.shape)

    files_modified = sorted(p for p in new_files.keys() & old_files.keys() if new_files[p].hash != old_files[p].hash)
    files_added = sorted(new_files.keys() - old_files.keys())
    files_removed = sorted(old_files.keys() - new_files.keys())
    config_changed = any(p.rpartition("/")[2] == CONFIG_NAME for p in files_modified + files_added + files_removed)
    return Status(
        head=head,
        modified=sorted(n for n in new_tensors.keys() & old_tensors.keys() if differs(new_tensors[n], old_tensors[n])),
        added=sorted(new_tensors.keys() - old_tensors.keys()),
        removed=sorted(old_tensors.keys() - new_tensors.keys()),
        config_changed=config_changed,
        files_modified=files_modified,
        files_added=files_added,
        files_removed=files_removed,
    )
