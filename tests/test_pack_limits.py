"""Packs (store format 2): the limits and repairs behind the trust tests (``tests/test_trust_packs.py``).

A pack never holds more objects than a reader accepts; an index's fan-out table is checked, not trusted; a
pack whose file is gone is not "had"; debris of a killed commit or gc is counted by fsck and removed by gc once
old (and never anything adaptvc did not write); a pack whose index a killed gc took away while a writer reused
the pack gets its index back.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import xxhash

from adaptvc import Repository
from adaptvc.storage import pack
from adaptvc.storage.atomic import temp_name
from adaptvc.storage.disk_objects import DiskObjectStore
from tests.light import assert_refused, cli, ok, write_adapter

FANOUT_AT = 16  # after the 16-byte header


def packs(store: Path) -> list[Path]:
    return sorted((store / "objects" / "pack").glob("pack-*.idx"))


def entries(idx: Path) -> int:
    return struct.unpack_from("<I", idx.read_bytes(), 8)[0]


def test_a_writer_starts_a_new_pack_at_the_entry_limit_and_every_pack_stays_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(pack, "MAX_ENTRIES", 5)
    root = tmp_path / "store"
    root.mkdir()
    store = DiskObjectStore(root, packed=True)
    data = {store.put_bytes(f"object {i}".encode()): f"object {i}".encode() for i in range(12)}
    store.flush()
    assert [entries(p) for p in packs(root)] and all(entries(p) <= 5 for p in packs(root))
    assert sum(entries(p) for p in packs(root)) == 12
    fresh = DiskObjectStore(root, packed=True)
    assert {oid: fresh.read(oid) for oid in data} == data and fresh.bad_packs == {}
    # a consolidation (what gc does) keeps to the limit too
    fresh.repack(set(data), cutoff=float("inf"))
    assert all(entries(p) <= 5 for p in packs(root)) and sum(entries(p) for p in packs(root)) == 12
    again = DiskObjectStore(root, packed=True)
    assert {oid: again.read(oid) for oid in data} == data and again.bad_packs == {}
    # and an index of more entries than the limit is refused before it is read
    monkeypatch.setattr(pack, "MAX_ENTRIES", 4)
    over = DiskObjectStore(root, packed=True)
    assert set(over.iter_ids()) < set(data)
    assert any("more than a pack may hold (4)" in why for why in over.bad_packs.values()), over.bad_packs


def test_an_index_whose_fan_out_table_lies_is_refused_naming_the_table(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    (idx,) = packs(repo.admin_dir)
    data = bytearray(idx.read_bytes())
    fanout = list(struct.unpack_from("<256I", data, FANOUT_AT))
    b = next(i for i in range(255) if fanout[i] > 0)  # move one id into the wrong first-byte bucket
    fanout[b] -= 1
    struct.pack_into("<256I", data, FANOUT_AT, *fanout)
    data[-16:] = xxhash.xxh3_128_digest(bytes(data[:-16]))  # the checksum agrees: only the table lies
    os.chmod(idx, 0o644)
    idx.write_bytes(bytes(data))
    line = assert_refused(cli(work, "checkout", "HEAD", "-o", str(tmp_path / "out")), idx.stem)
    assert "fan-out" in line, line
    res = cli(work, "fsck")
    assert res.exit_code == 1 and "fan-out" in res.stdout and idx.stem in res.stderr, (res.stdout, res.stderr)


def test_an_object_whose_pack_file_is_gone_is_not_had_and_is_written_again(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    store = DiskObjectStore(root, packed=True)
    oid = store.put_bytes(b"some tensor bytes")
    store.flush()
    (idx,) = packs(root)
    idx.with_suffix(".pack").unlink()
    fresh = DiskObjectStore(root, packed=True)
    assert not fresh.has(oid)  # its index alone does not make it had (a push or fetch would skip it)
    assert idx.stem in fresh.bad_packs
    assert fresh.put_bytes(b"some tensor bytes") == oid  # written again, into a new pack
    fresh.flush()
    assert DiskObjectStore(root, packed=True).read(oid) == b"some tensor bytes"


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)


def test_debris_in_the_pack_folder_is_counted_by_fsck_and_removed_by_gc_once_old(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    folder = repo.admin_dir / "objects" / "pack"
    orphan = folder / f"pack-{'ab' * 16}.pack"  # a pack whose index was never renamed into place
    orphan.write_bytes(b"AVPK" + bytes(8))
    temp = folder / temp_name("pack-x.idx")  # an index still under its temporary name
    temp.write_bytes(b"half")
    foreign = folder / "README"  # not adaptvc's: never touched
    foreign.write_text("hands off")
    report = Repository(work).fsck()
    assert report.ok and sorted(report.pack_debris) == sorted([orphan.name, temp.name])
    assert "2 file(s) in objects/pack" in ok(cli(work, "fsck")).stdout
    ok(cli(work, "gc"))  # young: a writer may be installing them right now
    assert orphan.exists() and temp.exists()
    for p in (orphan, temp):
        _age(p, 7200)
    ok(cli(work, "gc"))
    assert not orphan.exists() and not temp.exists() and foreign.read_text() == "hands off"
    assert Repository(work).fsck().pack_debris == []


def test_gc_gives_back_the_index_a_killed_gc_took_from_a_pack_a_writer_reused(tmp_path):
    """gc takes an old pack's index away, then checks whether a writer freshened the pack meanwhile; killed in
    between, it leaves the index in tmp/. The next gc puts it back when the pack is young (it was reused)."""
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    (idx,) = packs(repo.admin_dir)
    (repo.admin_dir / "tmp").mkdir(exist_ok=True)
    trash = repo.admin_dir / "tmp" / temp_name(f"{idx.stem}.gc-idx")
    os.rename(idx, trash)  # what the killed gc left
    assert_refused(cli(work, "checkout", "HEAD", "-o", str(tmp_path / "gone")))
    ok(cli(work, "gc"))  # the pack is young (a writer freshened it): its index comes back
    assert idx.exists() and not trash.exists()
    ok(cli(work, "checkout", "HEAD", "-o", str(tmp_path / "back")))
    ok(cli(work, "fsck"))
