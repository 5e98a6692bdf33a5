"""The storage contract, run against every implementation (disk and memory), and the operations on top of it
run against the in-memory store (the fast tier: no files, no torch)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save

from adaptvc.errors import ChecksumMismatchError, ObjectNotFoundError, RefMovedError
from adaptvc.hashing import hash_bytes
from adaptvc.objects import Snapshot
from adaptvc.ops import graph
from adaptvc.ops.capture import capture_bytes
from adaptvc.ops.gc import gc
from adaptvc.ops.record import Target, record
from adaptvc.ops.revisions import resolve_revision
from adaptvc.ops.status import compare_snapshots
from adaptvc.storage.disk_objects import DiskObjectStore
from adaptvc.storage.disk_refs import DiskRefs
from adaptvc.storage.memory import MemoryObjectStore, MemoryRefs

A, B = "a" * 32, "b" * 32


@pytest.fixture(params=["disk", "memory"])
def store(request, tmp_path):
    return DiskObjectStore(tmp_path) if request.param == "disk" else MemoryObjectStore()


@pytest.fixture(params=["disk", "memory"])
def refs(request, tmp_path):
    r = DiskRefs(tmp_path) if request.param == "disk" else MemoryRefs()
    r.init_head("refs/heads/main")
    return r


# -- the object store contract ----------------------------------------------------------------------------
def test_objects_are_content_addressed_and_verified(store):
    oid = store.put_bytes(b"hello")
    assert oid == hash_bytes(b"hello") and store.has(oid) and store.size(oid) == 5
    assert store.read(oid) == b"hello"
    assert store.put_known(oid, b"hello") is False  # writing it twice is harmless
    assert list(store.iter_ids()) == [oid] and list(store.iter_ids(oid[:6])) == [oid]
    with pytest.raises(ObjectNotFoundError):
        store.read("0" * 32)


def test_streams_and_copies_are_rehashed(store, tmp_path):
    data = bytes(range(256)) * 40_000
    oid = store.put_stream(io.BytesIO(data), len(data))
    assert oid == hash_bytes(data)
    assert b"".join(bytes(c) for c in store.iter_chunks(oid)) == data
    other = MemoryObjectStore()
    assert other.copy_from(store, oid) == len(data) and other.read(oid) == data
    assert other.copy_from(store, oid) == 0  # already there


def test_a_liar_is_caught_on_read(store):
    store.put_known(A, b"not the bytes of A")
    with pytest.raises(ChecksumMismatchError):
        store.read(A)
    with pytest.raises(ChecksumMismatchError):
        MemoryObjectStore().copy_from(store, A)


def test_gc_side_of_the_contract(store):
    old = store.put_bytes(b"old")
    store.end_session()
    time.sleep(0.05)
    cutoff = store.clock()
    time.sleep(0.05)
    new = store.put_bytes(b"new")
    assert store.prune(new, cutoff) is None and store.has(new)  # younger than the cut-off: kept
    assert store.prune(old, cutoff, dry_run=True) == 3 and store.has(old)
    assert store.prune(old, cutoff) == 3 and not store.has(old)


def test_another_threads_write_session_holds_back_gc(store):
    started = threading.Event()
    finish = threading.Event()

    def writer() -> None:
        store.put_bytes(b"a commit in progress")
        started.set()
        finish.wait(10)
        store.end_session()

    t = threading.Thread(target=writer)
    t.start()
    started.wait(10)
    since = store.writers_since()
    assert since is not None and since <= store.clock()
    finish.set()
    t.join()
    assert store.writers_since() is None


# -- the refs contract ------------------------------------------------------------------------------------
def test_refs_move_only_by_compare_and_swap(refs):
    refs.set_if_equals("refs/heads/main", None, A, "first")
    assert refs.read("refs/heads/main") == A and refs.head_commit() == A
    with pytest.raises(RefMovedError):
        refs.set_if_equals("refs/heads/main", None, B)
    refs.set_if_equals("refs/heads/main", A, B, "second")
    assert [(e.old, e.new, e.message) for e in refs.reflog("refs/heads/main")] == [(A, B, "second"),
                                                                                  (None, A, "first")]
    refs.set_if_equals("refs/tags/v1", None, A)
    assert refs.list("refs/tags/") == {"v1": A} and refs.list("refs/heads/") == {"main": B}
    refs.set_if_equals("refs/tags/v1", A, None)
    assert refs.list("refs/tags/") == {} and "refs/tags/v1" in refs.reflog_refs()
    refs.delete_reflog("refs/tags/v1")
    assert "refs/tags/v1" not in refs.reflog_refs()


def test_head_detached_and_back(refs):
    refs.set_if_equals("refs/heads/main", None, A)
    refs.set_head(B, "detach")
    assert refs.head_target() is None and refs.head_commit() == B
    with pytest.raises(RefMovedError):
        refs.set_head(A, expected=A)  # detached at B, not A
    refs.set_head("refs/heads/main", "back")
    assert refs.head_target() == "refs/heads/main" and refs.head_commit() == A
    assert refs.bad_refs() == []


# -- operations on the in-memory store --------------------------------------------------------------------
CONFIG = json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}).encode()


def tensors(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return save({"base_model.model.layers.0.q_proj.lora_A.weight": rng.standard_normal((2, 8), dtype=np.float32),
                 "base_model.model.layers.0.q_proj.lora_B.weight": rng.standard_normal((8, 2), dtype=np.float32)},
                metadata={"format": "pt"})


def commit(store, refs, seed: int, parents: list[str], message: str, branch: str = "main"):
    snap = capture_bytes({"adapter_config.json": CONFIG, "adapter_model.safetensors": tensors(seed)}, store)
    ref = f"refs/heads/{branch}"
    return record(store, refs, snap, parents=parents, message=message, author="t",
                  target=Target(ref, refs.read(ref)), timestamp=f"2026-01-01T00:00:{seed:02d}+00:00")


def test_history_with_a_merge_in_memory():
    store, refs = MemoryObjectStore(), MemoryRefs()
    refs.init_head("refs/heads/main")
    o = commit(store, refs, 1, [], "origin")
    refs.set_if_equals("refs/heads/chat", None, o.id)
    ours = commit(store, refs, 2, [o.id], "code")
    theirs = commit(store, refs, 3, [o.id], "chat", branch="chat")
    assert graph.merge_bases(store, ours.id, theirs.id) == [o.id]
    merged = commit(store, refs, 4, [ours.id, theirs.id], "merge chat")
    assert merged.parents == (ours.id, theirs.id)
    assert [c.message for c in graph.walk(store, [merged.id])] == ["merge chat", "chat", "code", "origin"]
    assert graph.is_ancestor(store, theirs.id, merged.id) and not graph.is_ancestor(store, merged.id, ours.id)
    assert resolve_revision("main^2", refs, store) == theirs.id
    assert resolve_revision("main~2", refs, store) == o.id
    assert refs.reflog("refs/heads/main")[0].message.startswith("commit (merge)")
    st = compare_snapshots(store.read_snapshot(o.snapshot), store.read_snapshot(merged.snapshot))
    assert len(st.modified) == 2 and st.config_changed is False


def test_gc_on_the_memory_store_removes_only_the_unreachable():
    store, refs = MemoryObjectStore(), MemoryRefs()
    refs.init_head("refs/heads/main")
    commit(store, refs, 1, [], "v1")
    stray = store.put_bytes(b"nobody points at me")
    store.end_session()
    before = set(store.iter_ids())
    report = gc(store, refs, grace_seconds=0)
    assert report.removed == [stray] and set(store.iter_ids()) == before - {stray}


def test_a_snapshot_names_only_adapter_files_whatever_builds_it():
    from adaptvc.errors import UnsafePathError

    with pytest.raises(UnsafePathError):
        capture_bytes({".git/config": b"[core]"}, MemoryObjectStore())
    with pytest.raises(UnsafePathError):
        Snapshot.from_dict({"type": "snapshot", "format": 1, "files": [
            {"path": "train.py", "size": 1, "hash": "0" * 32}]})
