"""The object store: content addressing, atomic writes, re-hash on read."""

from __future__ import annotations

import os

import pytest

from adaptvc.errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from adaptvc.hashing import hash_bytes
from adaptvc.storage.disk_objects import DiskObjectStore as ObjectStore


@pytest.fixture
def store(tmp_path):
    return ObjectStore(tmp_path)


def test_put_and_read(store):
    oid = store.put_bytes(b"hello")
    assert oid == hash_bytes(b"hello")
    assert store.path(oid) == store.objects_dir / oid[:2] / oid[2:]
    assert store.read(oid) == b"hello"
    assert store.has(oid)
    assert list(store.iter_ids()) == [oid]
    assert list(store.iter_ids(oid[:5])) == [oid]
    assert list(store.iter_ids("ffff" if not oid.startswith("ffff") else "0000")) == []


def test_identical_bytes_are_stored_once_and_leave_no_temp_files(store):
    a = store.put_bytes(b"x" * 1000)
    assert store.put_known(a, b"x" * 1000) is False
    assert store.put_bytes(b"x" * 1000) == a
    store.flush()
    assert sum(len(files) for _, _, files in os.walk(store.objects_dir)) == 1
    assert os.listdir(store.tmp_dir) == []


def test_objects_are_read_only_files(store):
    oid = store.put_bytes(b"data")
    assert store.path(oid).stat().st_mode & 0o222 == 0


def test_corrupt_object_is_detected_on_read(store):
    oid = store.put_bytes(b"good bytes")
    p = store.path(oid)
    os.chmod(p, 0o644)
    p.write_bytes(b"evil bytes")
    with pytest.raises(ChecksumMismatchError) as e:
        store.read(oid)
    assert e.value.expected == oid and e.value.got == hash_bytes(b"evil bytes")
    with pytest.raises(ChecksumMismatchError):
        b"".join(bytes(c) for c in store.iter_chunks(oid))


def test_missing_object(store):
    with pytest.raises(ObjectNotFoundError):
        store.read("ab" * 16)


def test_object_replaced_by_symlink_is_refused(store, tmp_path):
    oid = store.put_bytes(b"data")
    target = tmp_path / "elsewhere"
    target.write_bytes(b"data")
    store.path(oid).unlink()
    store.path(oid).symlink_to(target)
    with pytest.raises(CorruptObjectError, match="symbolic link"):
        store.read(oid)


def test_put_stream_hashes_what_it_stores(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src"
    src.write_bytes(data)
    with open(src, "rb") as f:
        oid = store.put_stream(f, len(data))
    assert oid == hash_bytes(data)
    assert b"".join(bytes(c) for c in store.iter_chunks(oid)) == data


def test_not_an_id_is_refused(store):
    with pytest.raises(CorruptObjectError):
        store.path("../../etc/passwd")
