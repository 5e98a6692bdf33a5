"""Safetensors files put together from tensors that are already blobs (a merge, a partial restore).

A new file is described, not copied: its header is encoded here (as the safetensors library lays it out:
``__metadata__`` first, tensors back to back in the order given, the header padded with spaces to a multiple
of 8 bytes) and its tensors are the blobs they already are, so a tensor taken from one side of a merge keeps
its blob id. Only the whole-file hash needs the bytes, which are streamed from the store.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidAdapterError
from ..hashing import hash_bytes, new_hasher
from ..objects import FileEntry, SafetensorsLayout, TensorEntry
from ..safetensors_format import DTYPE_BITS, read_header
from ..storage.base import ObjectStore


def encode_header(tensors: Sequence[TensorEntry], metadata: dict[str, str] | None) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding ``tensors`` in this order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for t in tensors:
        numel = 1
        for d in t.shape:
            numel *= d
        if numel * DTYPE_BITS[t.dtype] != 8 * t.size:
            raise ValueError(f"tensor {t.name}: {t.size} bytes do not fit {t.dtype} {list(t.shape)}")
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.size]}
        offset += t.size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def header_metadata(store: ObjectStore, entry: FileEntry) -> dict[str, str] | None:
    """The ``__metadata__`` of a stored safetensors file (None when it has none or cannot be read)."""
    if entry.layout is None:
        return None
    try:
        raw = store.read(entry.layout.header, 1 << 27)
        return read_header(io.BytesIO(raw), len(raw) + sum(t.size for t in entry.layout.tensors), entry.path).metadata
    except InvalidAdapterError:
        return None


def compose(store: ObjectStore, path: str, tensors: Sequence[TensorEntry], metadata: dict[str, str] | None,
            new_blobs: dict[str, bytes] | None = None) -> FileEntry:
    """Store the header (and ``new_blobs``, ``{blob id: bytes}``) and describe the file ``path`` made of
    ``tensors``; every other blob must already be in ``store``. The whole-file hash streams the blobs."""
    new_blobs = new_blobs or {}
    header = encode_header(tensors, metadata)
    whole = new_hasher()
    whole.update(header)
    for t in tensors:
        if t.blob in new_blobs:
            whole.update(new_blobs[t.blob])
        else:
            for chunk in store.iter_chunks(t.blob):
                whole.update(chunk)
    header_id = hash_bytes(header)
    store.put_known(header_id, header)
    for oid, data in new_blobs.items():
        store.put_known(oid, data)
    size = len(header) + sum(t.size for t in tensors)
    return FileEntry(path, size, whole.hexdigest(), SafetensorsLayout(header_id, len(header), tuple(tensors)))
