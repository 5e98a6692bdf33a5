"""Store format 2 (packs): the bytes on disk are the ones ``docs/format.md`` documents, a format-1 store stays
readable and upgrades in place, and a SIGKILL at any point of a pack-writing command loses nothing."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import xxhash

from adaptvc import Repository
from adaptvc.storage.disk_objects import DiskObjectStore

from .light import CLI, ENV, cli, digest, loose_store, ok, put_raw_object, write_adapter


def xxh(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


def parse_index(data: bytes) -> dict:
    """An independent reader of the documented index layout (not the store's own code)."""
    magic, version, count, zero = struct.unpack_from("<4sIII", data, 0)
    fanout = struct.unpack_from("<256I", data, 16)
    table = data[16 + 1024: 16 + 1024 + 48 * count]
    entries = []
    for i in range(count):
        oid, offset, length, raw_size, encoding, pad = struct.unpack_from("<16sQQQB7s", table, 48 * i)
        entries.append({"id": oid, "offset": offset, "length": length, "raw_size": raw_size,
                        "encoding": encoding, "pad": pad})
    pack_size, pack_hash, own_hash = struct.unpack_from("<Q16s16s", data, 16 + 1024 + 48 * count)
    return {"magic": magic, "version": version, "count": count, "zero": zero, "fanout": fanout, "table": table,
            "entries": entries, "pack_size": pack_size, "pack_hash": pack_hash, "own_hash": own_hash,
            "size": len(data), "body": data[: len(data) - 16]}


def packs_of(work: Path) -> list[Path]:
    return sorted((work / ".adaptvc" / "objects" / "pack").glob("pack-*.idx"))


def check_pack(idx_path: Path) -> dict:
    """Every documented field of one pack and its index, checked against the bytes."""
    idx = parse_index(idx_path.read_bytes())
    pack = idx_path.with_suffix(".pack").read_bytes()
    assert idx["magic"] == b"AVIX" and idx["version"] == 2 and idx["zero"] == 0
    assert idx["size"] == 16 + 1024 + 48 * idx["count"] + 40
    ids = [e["id"] for e in idx["entries"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert list(idx["fanout"]) == [sum(1 for i in ids if i[0] <= b) for b in range(256)]
    assert idx["own_hash"] == xxh(idx["body"])
    assert idx_path.stem == "pack-" + xxh(idx["table"]).hex()
    assert pack[:12] == b"AVPK" + struct.pack("<II", 2, 0)
    assert idx["pack_size"] == len(pack) and idx["pack_hash"] == xxh(pack)
    spans = sorted((e["offset"], e["offset"] + e["length"]) for e in idx["entries"])
    assert spans[0][0] == 12 and spans[-1][1] == len(pack)  # objects back to back, nothing else in the pack
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    for e in idx["entries"]:
        stored = pack[e["offset"]: e["offset"] + e["length"]]
        assert e["pad"] == bytes(7) and e["encoding"] in (0, 1)
        if e["encoding"] == 0:
            assert e["raw_size"] == e["length"] and xxh(stored) == e["id"]
        else:
            assert stored[:4] in (b"AVZ1", b"AVZ2")
    return idx


def test_a_pack_of_two_known_objects_is_exactly_the_documented_bytes(tmp_path):
    (tmp_path / "store").mkdir()
    store = DiskObjectStore(tmp_path / "store", packed=True)
    a, b = store.put_bytes(b"hello"), store.put_bytes(b"world!")
    store.flush()
    assert (a, b) == (xxhash.xxh3_128_hexdigest(b"hello"), xxhash.xxh3_128_hexdigest(b"world!"))
    [idx_path] = sorted((tmp_path / "store" / "objects" / "pack").glob("*.idx"))
    pack = b"AVPK" + struct.pack("<II", 2, 0) + b"hello" + b"world!"
    where = {a: (12, 5), b: (17, 6)}
    ordered = sorted(where)
    fanout = [sum(1 for o in ordered if int(o[:2], 16) <= i) for i in range(256)]
    table = b"".join(struct.pack("<16sQQQB7x", bytes.fromhex(o), where[o][0], where[o][1], where[o][1], 0)
                     for o in ordered)
    body = b"AVIX" + struct.pack("<III", 2, 2, 0) + struct.pack("<256I", *fanout) + table
    body += struct.pack("<Q16s", len(pack), xxh(pack))
    assert idx_path.with_suffix(".pack").read_bytes() == pack
    assert idx_path.read_bytes() == body + xxh(body)
    assert idx_path.name == f"pack-{xxh(table).hex()}.idx"
    reread = DiskObjectStore(tmp_path / "store", packed=True)
    assert reread.read(a) == b"hello" and reread.read(b) == b"world!"


def test_a_commit_writes_one_pack_and_its_commit_and_every_field_checks(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1, layers=4)
    repo = Repository.init(work)
    c1 = repo.commit("v1").id
    [idx] = packs_of(work)
    parsed = check_pack(idx)
    # every object of the version is in the pack, but for the commit itself
    assert {bytes.fromhex(o) for o in repo.store.iter_ids()} == {e["id"] for e in parsed["entries"]} | {
        bytes.fromhex(c1)}
    # the commit itself is one small loose file, so history reads never open a pack
    assert (work / ".adaptvc" / "objects" / c1[:2] / c1[2:]).is_file()
    # a version that reuses every object writes no pack at all
    repo.commit("same tensors, new message", allow_empty=True)
    assert packs_of(work) == [idx]
    write_adapter(work, seed=2, layers=4)
    repo.commit("v2")
    assert len(packs_of(work)) == 2 and all(check_pack(p) for p in packs_of(work))
    # gc consolidates both into one pack that checks the same way
    repo.gc(grace_seconds=0)
    [merged] = packs_of(work)
    check_pack(merged)
    assert repo.fsck().ok


def test_a_format_1_store_is_read_then_upgraded_in_place(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    repo = Repository.init(work)
    loose_store(work)
    repo = Repository(work)
    versions = {}
    for i in range(3):
        write_adapter(work, seed=i, layers=3)
        repo.commit(f"v{i}")
        repo.tag(f"v{i}")
        versions[f"v{i}"] = (work / "adapter_model.safetensors").read_bytes()
    assert packs_of(work) == [] and repo.store_format == 1
    loose_count = sum(1 for _ in Path(work, ".adaptvc", "objects").rglob("*") if _.is_file())
    assert loose_count > 10
    res = ok(cli(work, "upgrade"))
    assert "upgraded from format 1 to 2" in res.stdout
    assert json.loads((work / ".adaptvc" / "config.json").read_text())["format"] == 2
    [idx] = packs_of(work)
    check_pack(idx)
    left = [p for p in Path(work, ".adaptvc", "objects").rglob("*") if p.is_file() and "pack" not in p.parts]
    assert left == []  # every loose object is in the pack now
    again = Repository(work)
    assert again.store_format == 2 and again.fsck().ok
    for tag, data in versions.items():
        out = tmp_path / f"out-{tag}"
        again.checkout(tag, out)
        assert (out / "adapter_model.safetensors").read_bytes() == data
    assert "already format 2" in ok(cli(work, "upgrade")).stdout
    assert json.loads(ok(cli(work, "upgrade", "--json")).stdout) == {"from": 2, "to": 2, "objects": 0}
    # new commits go to packs
    write_adapter(work, seed=9, layers=3)
    again.commit("v9")
    assert len(packs_of(work)) == 2


def kill_after(args: list[str], delay: float) -> int:
    p = subprocess.Popen([*CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    return p.wait()


def expected_checkouts(repo: Repository, tmp_path: Path, tags: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for tag in tags:
        dest = tmp_path / f"want-{tag}"
        repo.checkout(tag, dest)
        out[tag] = digest(dest)
    return out


def assert_every_version_checks_out(work: Path, tmp_path: Path, want: dict[str, dict[str, str]], k: int) -> None:
    repo = Repository(work)
    report = repo.fsck()
    assert report.ok, [(p.oid, p.kind, p.problem) for p in report.problems]
    for tag, files in want.items():
        dest = tmp_path / f"got-{k}-{tag}"
        repo.checkout(tag, dest)
        assert digest(dest) == files, tag


@pytest.mark.slow
def test_sigkill_during_upgrade_loses_nothing_and_a_rerun_finishes(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    Repository.init(work)
    loose_store(work)
    repo = Repository(work)
    tags = []
    for i in range(6):
        write_adapter(work, seed=i, layers=16, rank=16, dim=512)  # ~4 MB a version
        repo.commit(f"v{i}")
        repo.tag(f"v{i}")
        tags.append(f"v{i}")
    want = expected_checkouts(repo, tmp_path, tags)
    # how long a whole upgrade takes here and now (a copy of the store): the kills land inside that span
    shutil.copytree(work, tmp_path / "calibrate", symlinks=True)
    started = time.perf_counter()
    subprocess.run([*CLI, "-C", str(tmp_path / "calibrate"), "upgrade"], env=ENV, check=True, capture_output=True)
    span = time.perf_counter() - started
    rng = random.Random(11)
    kills_before_done = 0
    for k in range(12):
        kill_after(["-C", str(work), "upgrade"], rng.uniform(0.3 * span, 0.9 * span))
        assert_every_version_checks_out(work, tmp_path, want, k)
        if Repository(work).store_format == 2:
            break
        kills_before_done = k + 1
    assert kills_before_done >= 1  # at least one kill landed inside the upgrade, not after it
    ok(cli(work, "upgrade"))
    assert Repository(work).store_format == 2
    assert_every_version_checks_out(work, tmp_path, want, 99)
    assert [p for p in Path(work, ".adaptvc", "objects").rglob("*")
            if p.is_file() and "pack" not in p.parts] == []


@pytest.mark.slow
@pytest.mark.parametrize("aggressive", [False, True], ids=["gc", "gc-aggressive"])
def test_sigkill_during_repack_loses_nothing(tmp_path, aggressive):
    work = tmp_path / "work"
    work.mkdir()
    repo = Repository.init(work)
    tags = []
    for i in range(4):
        write_adapter(work, seed=i, layers=8, rank=16, dim=256)
        repo.commit(f"v{i}")
        repo.tag(f"v{i}")
        tags.append(f"v{i}")
    for _ in range(10):  # unreachable garbage for gc to drop while it consolidates the packs
        repo.store.put_bytes(os.urandom(300_000))
    repo.store.flush()
    want = expected_checkouts(repo, tmp_path, tags)
    rng = random.Random(5)
    args = ["-C", str(work), "gc", "--grace", "0", *(["--aggressive"] if aggressive else [])]
    for k in range(10):
        kill_after(args, rng.uniform(0.05, 0.5))
        assert_every_version_checks_out(work, tmp_path, want, k)
    ok(cli(work, *args[2:]))
    assert_every_version_checks_out(work, tmp_path, want, 99)
    assert len(packs_of(work)) == 1
    assert os.listdir(work / ".adaptvc" / "tmp") == []


def test_a_repack_that_rewrites_an_identical_pack_keeps_it(tmp_path):
    """gc after a killed gc: one pack, and loose copies of some of its objects. The consolidated pack has the
    same objects at the same places, so the same name; retiring the old one must not delete the new."""
    root = tmp_path / "store"
    root.mkdir()
    store = DiskObjectStore(root, packed=True)
    blobs = sorted((os.urandom(1000 + i) for i in range(6)), key=lambda b: xxhash.xxh3_128_hexdigest(b))
    ids = [store.put_bytes(b) for b in blobs]  # in id order: the order a repack writes
    store.flush()
    [idx] = sorted((root / "objects" / "pack").glob("*.idx"))
    for b in blobs[:3]:  # loose copies, as a repack killed before pruning leaves them
        put_raw_object(root, b)
    time.sleep(0.05)
    report = store.repack(set(ids), cutoff=time.time())
    assert report.removed == [] and report.packs_written == 1
    assert sorted((root / "objects" / "pack").glob("*.idx")) == [idx]
    assert [p for p in (root / "objects").rglob("*") if p.is_file() and "pack" not in p.parts] == []
    fresh = DiskObjectStore(root, packed=True)
    assert [fresh.read(o) for o in ids] == blobs
