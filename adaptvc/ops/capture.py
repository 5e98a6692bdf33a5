"""Turn a folder in PEFT layout (or files held in memory) into a :class:`Snapshot`, storing each tensor as its
own blob.

Every byte of every file is read once, in file order: it feeds the whole-file hash and, for a safetensors
file, the hash of the tensor it belongs to; a blob is written only when the store lacks it. With
``store=None`` nothing is written (``status`` uses this to compare the work tree with a commit).

The folder is hostile until checked: only the allow-listed adapter files are read (``peft_layout``), a link
among them is refused (never followed: ``README.md -> /proc/self/environ`` would put a token in the store),
headers and configs are bounded and checked before anything is stored, and a sub-folder that cannot be read
is skipped rather than stopping every command.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    FileChangedError,
    InvalidAdapterError,
    NoAdapterError,
    PickleRefusedError,
    SymlinkRefusedError,
)
from ..hashing import BLOCK_SIZE, hash_bytes, hash_stream, new_hasher
from ..objects import FileEntry, SafetensorsLayout, Snapshot, TensorEntry
from ..parsing import JsonError, parse_json
from ..peft_layout import (
    COMPANION_FILES,
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    has_unstorable_characters,
    is_adapter_folder_name,
    is_config_path,
    is_training_state,
)
from ..progress import SILENT, Progress
from ..safetensors_format import read_header
from ..storage.atomic import open_dir
from ..storage.base import ObjectStore
from ..storage.stat_cache import StatCache

#: Plain files larger than this are not adapter metadata (training state excepted); refusing keeps memory bounded.
MAX_PLAIN_FILE = 512 << 20
#: An adapter config is parsed as JSON: bounded far below what could hurt (PEFT writes a few kilobytes).
MAX_CONFIG_FILE = 16 << 20
#: Plain files larger than this are streamed into the store instead of read at once.
STREAM_PLAIN_FILE = 64 << 20
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


def _regular(folder: Path, name: str, rel: str) -> bool:
    """Whether ``folder/name`` is a regular file; a link is refused, anything else (a FIFO) is not a file."""
    try:
        st = os.lstat(folder / name)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkRefusedError(rel)
    return stat.S_ISREG(st.st_mode)


def _adapter_dir_files(folder: Path, prefix: str, allow_pickle: bool,
                       ignore: Callable[[str], bool] | None = None) -> list[str]:
    if not _regular(folder, CONFIG_NAME, prefix + CONFIG_NAME):
        return []
    weights = WEIGHTS_NAME
    if not _regular(folder, WEIGHTS_NAME, prefix + WEIGHTS_NAME):
        if not _regular(folder, PICKLE_WEIGHTS_NAME, prefix + PICKLE_WEIGHTS_NAME):
            raise NoAdapterError(str(folder), f"{prefix + CONFIG_NAME} has no {WEIGHTS_NAME} beside it")
        if not allow_pickle:
            raise PickleRefusedError(str(folder / PICKLE_WEIGHTS_NAME))
        weights = PICKLE_WEIGHTS_NAME
    names = [CONFIG_NAME, weights, *(n for n in COMPANION_FILES
                                     if not (ignore and ignore(prefix + n)) and _regular(folder, n, prefix + n))]
    return [prefix + n for n in names]


def pickle_to_safetensors(data: bytes, rel: str) -> bytes:
    """An ``adapter_model.bin`` as safetensors bytes, loaded with ``torch.load(weights_only=True)`` (which
    refuses to run code). Only called with an explicit ``allow_pickle``."""
    try:
        import torch
        from safetensors.torch import save
    except ImportError:
        raise InvalidAdapterError(rel, "converting a pickle file needs torch: pip install 'adaptvc[torch]'") \
            from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad or unsafe file
        raise InvalidAdapterError(rel, f"not a loadable weights-only pickle ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InvalidAdapterError(rel, "not a state dict of named tensors")
    return save({k: v.detach().contiguous().clone() for k, v in state.items()}, metadata={"format": "pt"})


def find_adapter_files(folder: str | os.PathLike[str], allow_pickle: bool = False,
                       with_training_state: bool = False, ignore: Callable[[str], bool] | None = None,
                       ) -> AdapterFiles:
    """The adapter files of ``folder``: the top-level adapter and every sub-folder adapter (PEFT saves a
    model's extra adapters as ``<folder>/<adapter name>/``). Trainer ``checkpoint-*`` folders, hidden folders
    and folders that cannot be read are not adapters of this folder and are skipped. ``with_training_state``
    adds the Trainer's files for resuming (optimizer, scheduler, RNG, trainer state). ``ignore(path)`` leaves out
    sub-folders (``serve/``) and companion files it names (the work tree's ignore files, ``ops/ignore.py``)."""
    root = Path(folder)
    if not root.is_dir():
        raise NoAdapterError(str(root), "no such folder")
    paths = _adapter_dir_files(root, "", allow_pickle, ignore)
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if ignore is not None and ignore(entry.name + "/"):
            continue
        if not is_adapter_folder_name(entry.name):
            if has_unstorable_characters(entry.name) and entry.is_dir(follow_symlinks=False) \
                    and os.path.isfile(os.path.join(entry.path, CONFIG_NAME)):
                # never silently left out: status and commit both say so (a snapshot cannot hold the name)
                raise InvalidAdapterError(f"the sub-folder {repr(os.fsencode(entry.name))[1:]}",
                                          "holds an adapter, but its name has control characters or bytes that are "
                                          "not UTF-8: rename it (or ignore it in .adaptvcignore)")
            continue
        try:
            if entry.is_symlink():
                if os.path.isfile(os.path.join(entry.path, CONFIG_NAME)):
                    raise SymlinkRefusedError(entry.name)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            paths += _adapter_dir_files(Path(entry.path), entry.name + "/", allow_pickle, ignore)
        except PermissionError:
            continue  # not ours to read, so not an adapter we could version
    if not any(p.endswith(CONFIG_NAME) for p in paths):
        if _regular(root, WEIGHTS_NAME, WEIGHTS_NAME):
            raise NoAdapterError(str(root), f"{WEIGHTS_NAME} has no {CONFIG_NAME} beside it")
        raise NoAdapterError(str(root), describe_other_weights(root) or "")
    if with_training_state:
        paths += [e.name for e in entries if is_training_state(e.name) and not (ignore and ignore(e.name))
                  and _regular(root, e.name, e.name)]
    return AdapterFiles(root, tuple(sorted(paths)))


_LORA_HINTS = ("lora_down", "lora_up", "lora.down", "lora.up", "lora_A", "lora_B", ".alpha")


def describe_other_weights(folder: Path) -> str | None:
    """What a folder without a PEFT adapter holds instead, when it holds LoRA weights in another format
    (diffusers' ``pytorch_lora_weights.safetensors``, a kohya file): a sentence for the user, or None."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".safetensors"))[:8]
    except OSError:
        return None
    for name in names:
        try:
            with open_adapter_file(folder, name) as f:
                header = read_header(f, os.fstat(f.fileno()).st_size, name)
        except Exception:  # not readable as safetensors: not ours to describe
            continue
        tensors = [t.name for t in header.tensors]
        if not any(h in t for t in tensors for h in _LORA_HINTS):
            continue
        kind = "diffusers" if any(t.startswith(("unet.", "text_encoder", "transformer.")) for t in tensors) else \
            "kohya"
        return (f"{name} is a {kind}-style LoRA file ({len(tensors)} tensors, no {CONFIG_NAME}); adaptvc versions "
                f"PEFT adapters ({CONFIG_NAME} + {WEIGHTS_NAME}): load it into a PEFT model and save_pretrained() "
                "it, or version the file with git-lfs")
    return None


@contextlib.contextmanager
def open_adapter_file(root: Path, rel: str):
    """``root/rel`` opened for reading without following a link (and without blocking on a FIFO)."""
    parts = rel.split("/")
    try:
        dfd = open_dir(root, parts[:-1])
    except SymlinkRefusedError:
        raise SymlinkRefusedError(parts[0]) from None
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkRefusedError(rel) from None
            raise
    finally:
        os.close(dfd)
    f = os.fdopen(fd, "rb", buffering=0)
    with f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidAdapterError(rel, "not a regular file")
        yield f


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


def _snapshot_plain(f: Any, st: os.stat_result, rel: str, store: ObjectStore | None, progress: Progress,
                    on_disk: bool = True) -> FileEntry:
    if st.st_size > MAX_PLAIN_FILE and not is_training_state(rel):
        raise InvalidAdapterError(rel, f"{st.st_size} bytes is too large for an adapter's metadata file")
    if st.st_size > STREAM_PLAIN_FILE:  # an optimizer state: stream it, memory stays flat
        oid = store.put_stream(f, st.st_size) if store is not None else hash_stream(f, st.st_size)[0]
        if on_disk:
            _check_unchanged(f, st, rel)
        progress.update(st.st_size)
        return FileEntry(rel, st.st_size, oid)
    data = f.read()
    if on_disk:
        _check_unchanged(f, st, rel)
    if is_config_path(rel):
        check_config(data, rel)
    oid = hash_bytes(data)
    if store is not None:
        store.put_known(oid, data)
    progress.update(len(data))
    return FileEntry(rel, len(data), oid)


def check_config(data: bytes, rel: str) -> dict[str, Any]:
    """An adapter config's bytes as a dict, or InvalidAdapterError (bounded in size and depth)."""
    try:
        config = parse_json(data, max_bytes=MAX_CONFIG_FILE)
    except JsonError as e:
        raise InvalidAdapterError(rel, f"not acceptable JSON: {e}") from None
    if not isinstance(config, dict):
        raise InvalidAdapterError(rel, "not a JSON object")
    return config


def _check_config_size(st: os.stat_result, rel: str) -> None:
    if st.st_size > MAX_CONFIG_FILE:
        raise InvalidAdapterError(rel, f"{st.st_size} bytes is too large for an adapter config "
                                       f"(the limit is {MAX_CONFIG_FILE:,} bytes)")


def _preflight(files: AdapterFiles) -> None:
    """Check every safetensors header and config before anything is stored, so that a bad file is refused
    with the store untouched. (The data is read later, once.)"""
    for rel in files.paths:
        if rel.endswith(".safetensors"):
            with open_adapter_file(files.root, rel) as f:
                read_header(f, os.fstat(f.fileno()).st_size, rel)
        elif is_config_path(rel):
            with open_adapter_file(files.root, rel) as f:
                _check_config_size(os.fstat(f.fileno()), rel)
                check_config(f.read(), rel)


def build_snapshot(files: AdapterFiles, store: ObjectStore | None = None,
                   progress: Progress = SILENT, cache: StatCache | None = None) -> Snapshot:
    """Hash (and with ``store``, store) every file of ``files``; return the snapshot describing them.

    With a stat ``cache``, a file whose stat is unchanged since it was last hashed is not read (when
    storing, only if the store still has all its blobs)."""
    todo: list[tuple[str, os.stat_result]] = []
    entries: list[FileEntry] = []
    for rel in files.paths:
        st = os.lstat(files.root.joinpath(*rel.split("/")))
        if stat.S_ISLNK(st.st_mode):
            raise SymlinkRefusedError(rel)
        hit = cache.lookup(rel, st) if cache is not None else None
        if hit is not None and (store is None or all(store.freshen(b) for b in hit.blobs())):
            entries.append(hit)
        else:
            todo.append((rel, st))
    _preflight(AdapterFiles(files.root, tuple(rel for rel, _ in todo)))
    progress.begin("snapshot", sum(st.st_size for _, st in todo))
    try:
        for rel, st in todo:
            with open_adapter_file(files.root, rel) as f:
                fst = os.fstat(f.fileno())
                if rel.endswith(".safetensors"):
                    entry = _snapshot_safetensors_file(f, fst, rel, store, progress)
                elif rel.rpartition("/")[2] == PICKLE_WEIGHTS_NAME:  # only present with allow_pickle
                    data = pickle_to_safetensors(f.read(), rel)
                    converted = rel[: -len(PICKLE_WEIGHTS_NAME)] + WEIGHTS_NAME
                    entries.append(_snapshot_safetensors_file(io.BytesIO(data), _fake_stat(len(data)), converted,
                                                              store, progress, on_disk=False))
                    continue
                else:
                    if is_config_path(rel):
                        _check_config_size(fst, rel)
                    entry = _snapshot_plain(f, fst, rel, store, progress)
            entries.append(entry)
            if cache is not None:
                cache.record(rel, st, entry)
    finally:
        progress.end()
    if cache is not None:
        cache.save()
    return Snapshot(tuple(entries))


def _fake_stat(size: int) -> os.stat_result:
    return os.stat_result((0, 0, 0, 0, 0, 0, size, 0, 0, 0))


def capture_bytes(files: Mapping[str, bytes], store: ObjectStore | None, progress: Progress = SILENT) -> Snapshot:
    """A snapshot of files held in memory (``{path: bytes}``), stored like files read from a folder: each
    safetensors file split into its header and tensors, every path checked by the same rule."""
    entries = []
    for rel, data in sorted(files.items()):
        f = io.BytesIO(data)
        if rel.endswith(".safetensors"):
            entries.append(_snapshot_safetensors_file(f, _fake_stat(len(data)), rel, store, progress, on_disk=False))
        else:
            entries.append(_snapshot_plain(f, _fake_stat(len(data)), rel, store, progress, on_disk=False))
    return Snapshot(tuple(entries))


def read_config(folder: str | os.PathLike[str], rel: str = CONFIG_NAME) -> dict:
    """The adapter config of a folder, or {} when absent, unreadable or not acceptable."""
    try:
        with open_adapter_file(Path(folder), rel) as f:
            if os.fstat(f.fileno()).st_size > MAX_CONFIG_FILE:
                return {}
            return check_config(f.read(), rel)
    except (OSError, InvalidAdapterError, SymlinkRefusedError):
        return {}
