"""Turn a folder in PEFT layout into a :class:`Snapshot`, storing each tensor as its own blob.

Every byte of every file is read once, in file order: it feeds the whole-file hash and, for a safetensors
file, the hash of the tensor it belongs to; a blob is written only when the store lacks it. With
``store=None`` nothing is written (``status`` uses this to compare the work tree with a commit).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FileChangedError, InvalidAdapterError, NoAdapterError, PickleRefusedError
from .hashing import BLOCK_SIZE, hash_bytes, hash_stream, new_hasher
from .index import StatCache
from .objects import FileEntry, SafetensorsLayout, Snapshot, TensorEntry
from .progress import SILENT, Progress
from .safetensors_format import read_header
from .store import ObjectStore

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
#: Files kept beside an adapter: what PEFT's save_pretrained writes, and a tokenizer saved with it.
COMPANION_FILES = (
    "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
#: What transformers' Trainer saves beside the adapter in a checkpoint, to resume training. Kept only on
#: request (``with_training_state``), as opaque blobs: adaptvc never unpickles them.
TRAINING_STATE_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state.pth",
                        "trainer_state.json", "training_args.bin")
_RNG_STATE = re.compile(r"rng_state_\d+\.pth")
#: Plain files larger than this are not adapter metadata (training state excepted); refusing keeps memory bounded.
MAX_PLAIN_FILE = 512 << 20
#: Plain files larger than this are streamed into the store instead of read at once.
STREAM_PLAIN_FILE = 64 << 20


def is_training_state(rel: str) -> bool:
    return "/" not in rel and (rel in TRAINING_STATE_FILES or bool(_RNG_STATE.fullmatch(rel)))
#: Tensors up to this size are read once into a buffer; larger ones are streamed twice.
MAX_BUFFERED_TENSOR = 64 << 20


@dataclass(frozen=True)
class AdapterFiles:
    """The files of one folder that belong to its adapters, as sorted relative POSIX paths."""

    root: Path
    paths: tuple[str, ...]

    @property
    def total_size(self) -> int:
        return sum((self.root / p).stat().st_size for p in self.paths)


def _adapter_dir_files(folder: Path, prefix: str, allow_pickle: bool) -> list[str]:
    if not (folder / CONFIG_NAME).is_file():
        return []
    weights = WEIGHTS_NAME
    if not (folder / WEIGHTS_NAME).is_file():
        if not (folder / PICKLE_WEIGHTS_NAME).is_file():
            raise NoAdapterError(str(folder), f"{prefix + CONFIG_NAME} has no {WEIGHTS_NAME} beside it")
        if not allow_pickle:
            raise PickleRefusedError(str(folder / PICKLE_WEIGHTS_NAME))
        weights = PICKLE_WEIGHTS_NAME
    names = [CONFIG_NAME, weights, *(n for n in COMPANION_FILES if (folder / n).is_file())]
    return [prefix + n for n in names]


def pickle_to_safetensors(path: Path) -> bytes:
    """An ``adapter_model.bin`` as safetensors bytes, loaded with ``torch.load(weights_only=True)`` (which
    refuses to run code). Only called with an explicit ``allow_pickle``."""
    try:
        import torch
        from safetensors.torch import save
    except ImportError:
        raise InvalidAdapterError(str(path), "converting a pickle file needs torch: pip install 'adaptvc[torch]'") \
            from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad or unsafe file
        raise InvalidAdapterError(str(path), f"not a loadable weights-only pickle ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InvalidAdapterError(str(path), "not a state dict of named tensors")
    return save({k: v.detach().contiguous().clone() for k, v in state.items()}, metadata={"format": "pt"})


def find_adapter_files(folder: str | os.PathLike[str], allow_pickle: bool = False,
                       with_training_state: bool = False) -> AdapterFiles:
    """The adapter files of ``folder``: the top-level adapter and every sub-folder adapter (PEFT saves a
    model's extra adapters as ``<folder>/<adapter name>/``). Trainer ``checkpoint-*`` folders and hidden
    folders are not adapters of this folder and are skipped. ``with_training_state`` adds the Trainer's
    files for resuming (optimizer, scheduler, RNG, trainer state)."""
    root = Path(folder)
    if not root.is_dir():
        raise NoAdapterError(str(root), "no such folder")
    paths = _adapter_dir_files(root, "", allow_pickle)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name.startswith("checkpoint-") or not entry.is_dir():
            continue
        paths += _adapter_dir_files(Path(entry.path), entry.name + "/", allow_pickle)
    if not any(p.endswith(CONFIG_NAME) for p in paths):
        if (root / WEIGHTS_NAME).is_file():
            raise NoAdapterError(str(root), f"{WEIGHTS_NAME} has no {CONFIG_NAME} beside it")
        raise NoAdapterError(str(root))
    if with_training_state:
        paths += [e.name for e in os.scandir(root) if e.is_file() and is_training_state(e.name)]
    return AdapterFiles(root, tuple(sorted(paths)))


def _readinto_exactly(f, view: memoryview, path: str) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise FileChangedError(path)
        got += n


def _check_unchanged(f, before: os.stat_result, path: str) -> None:
    after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileChangedError(path)


def _snapshot_safetensors(path: Path, rel: str, store: ObjectStore | None, progress: Progress) -> FileEntry:
    with open(path, "rb", buffering=0) as f:
        return _snapshot_safetensors_file(f, os.fstat(f.fileno()), rel, store, progress)


def _snapshot_safetensors_file(f: Any, st: os.stat_result, rel: str, store: ObjectStore | None,
                               progress: Progress, on_disk: bool = True) -> FileEntry:
    header = read_header(f, st.st_size, rel)
    whole = new_hasher()
    whole.update(header.raw)
    header_id = hash_bytes(header.raw)
    if store is not None:
        store.put_known(header_id, header.raw)
    progress.update(header.size)
    biggest = max((t.nbytes for t in header.tensors), default=0)
    buf = memoryview(bytearray(min(biggest, MAX_BUFFERED_TENSOR)))
    entries = []
    for t in header.tensors:
        if t.nbytes <= MAX_BUFFERED_TENSOR:
            view = buf[: t.nbytes]
            _readinto_exactly(f, view, rel)
            whole.update(view)
            oid = hash_bytes(view)
            if store is not None:
                store.put_known(oid, view)
        else:
            oid = _stream_large_tensor(f, t.nbytes, whole, store, rel)
        entries.append(TensorEntry(t.name, t.dtype, t.shape, oid, t.nbytes))
        progress.update(t.nbytes)
    if on_disk:
        _check_unchanged(f, st, rel)
    layout = SafetensorsLayout(header_id, header.size, tuple(entries))
    return FileEntry(rel, st.st_size, whole.hexdigest(), layout)


def _stream_large_tensor(f, size: int, whole, store: ObjectStore | None, rel: str) -> str:
    start = f.tell()
    h = new_hasher()
    buf = memoryview(bytearray(BLOCK_SIZE))
    remaining = size
    while remaining:
        view = buf[: min(BLOCK_SIZE, remaining)]
        _readinto_exactly(f, view, rel)
        h.update(view)
        whole.update(view)
        remaining -= len(view)
    oid = h.hexdigest()
    if store is not None and not store.freshen(oid):
        f.seek(start)
        if store.put_stream(f, size) != oid:
            raise FileChangedError(rel)
    return oid


def _snapshot_plain(path: Path, rel: str, store: ObjectStore | None, progress: Progress) -> FileEntry:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > MAX_PLAIN_FILE and not is_training_state(rel):
            raise InvalidAdapterError(rel, f"{st.st_size} bytes is too large for an adapter's metadata file")
        if st.st_size > STREAM_PLAIN_FILE:  # an optimizer state: stream it, memory stays flat
            oid = store.put_stream(f, st.st_size) if store is not None else hash_stream(f, st.st_size)[0]
            _check_unchanged(f, st, rel)
            progress.update(st.st_size)
            return FileEntry(rel, st.st_size, oid)
        data = f.read()
        _check_unchanged(f, st, rel)
    if rel.rpartition("/")[2] == CONFIG_NAME:
        _check_config(data, rel)
    oid = hash_bytes(data)
    if store is not None:
        store.put_known(oid, data)
    progress.update(len(data))
    return FileEntry(rel, len(data), oid)


def _preflight(files: AdapterFiles) -> None:
    """Check every safetensors header and config before anything is stored, so that a bad file is refused
    with the store untouched. (The data is read later, once.)"""
    for rel in files.paths:
        path = files.root.joinpath(*rel.split("/"))
        if rel.endswith(".safetensors"):
            with open(path, "rb") as f:  # (a pickle file is checked by torch when it is converted)
                read_header(f, os.fstat(f.fileno()).st_size, rel)
        elif rel.rpartition("/")[2] == CONFIG_NAME:
            _check_config(path.read_bytes(), rel)


def _check_config(data: bytes, rel: str) -> None:
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidAdapterError(rel, f"not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise InvalidAdapterError(rel, "not a JSON object")


def build_snapshot(files: AdapterFiles, store: ObjectStore | None = None,
                   progress: Progress = SILENT, cache: StatCache | None = None) -> Snapshot:
    """Hash (and with ``store``, store) every file of ``files``; return the snapshot describing them.

    With a stat ``cache``, a file whose stat is unchanged since it was last hashed is not read (when
    storing, only if the store still has all its blobs)."""
    todo: list[tuple[str, os.stat_result]] = []
    entries: list[FileEntry] = []
    for rel in files.paths:
        st = os.stat(files.root.joinpath(*rel.split("/")))
        hit = cache.lookup(rel, st) if cache is not None else None
        if hit is not None and (store is None or all(store.freshen(b) for b in hit.blobs())):
            entries.append(hit)
        else:
            todo.append((rel, st))
    if store is not None:
        _preflight(AdapterFiles(files.root, tuple(rel for rel, _ in todo)))
    progress.begin("snapshot", sum(st.st_size for _, st in todo))
    try:
        for rel, st in todo:
            path = files.root.joinpath(*rel.split("/"))
            if rel.endswith(".safetensors"):
                entry = _snapshot_safetensors(path, rel, store, progress)
            elif rel.rpartition("/")[2] == PICKLE_WEIGHTS_NAME:  # only present with allow_pickle
                data = pickle_to_safetensors(path)
                converted = rel[: -len(PICKLE_WEIGHTS_NAME)] + WEIGHTS_NAME
                fake_stat = os.stat_result((0, 0, 0, 0, 0, 0, len(data), 0, 0, 0))
                entries.append(_snapshot_safetensors_file(io.BytesIO(data), fake_stat, converted, store, progress,
                                                          on_disk=False))
                continue
            else:
                entry = _snapshot_plain(path, rel, store, progress)
            entries.append(entry)
            if cache is not None:
                cache.record(rel, st, entry)
    finally:
        progress.end()
    if cache is not None:
        cache.save()
    return Snapshot(tuple(entries))


def read_config(folder: str | os.PathLike[str], rel: str = CONFIG_NAME) -> dict:
    """The adapter config of a folder, or {} when absent or unreadable."""
    try:
        data = json.loads(Path(folder, rel).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
