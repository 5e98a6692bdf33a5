"""The trust boundary, part 4: packs (store format 2) are hostile input too.

A pack and its index may be damaged by a disk, planted by another writer of a shared folder remote, or left
half-made by a process that was killed. Whatever they say, adaptvc must never return a wrong byte, never follow a
link, never lose what the history needs, keep its memory bounded, and say what is wrong in one line naming the
pack or the object (exit 1, no traceback). Every index below is forged the way an attacker would: with its own
checksum recomputed, so only the checks on its meaning stand between it and the reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash

from adaptvc import Repository
from tests.light import (
    CLI,
    ENV,
    Result,
    assert_refused,
    big_adapter,
    cli,
    loose_store,
    ok,
    peak_rss,
    proc,
    write_adapter,
    zstd_bomb,
)

# -- the index format, written out here independently of adaptvc.storage.pack -----------------------------------
IDX_HEADER = struct.Struct("<4sIII")  # magic, version, count, zero
IDX_ENTRY = struct.Struct("<16sQQQB7x")  # id, offset, stored length, raw size, encoding
IDX_TRAILER = struct.Struct("<Q16s16s")  # pack size, pack hash, index hash
FANOUT_BYTES = 256 * 4
PACK_HEADER_BYTES = 12


@dataclass
class Index:
    """A pack index as read from disk, to be edited and written back (with a valid checksum unless asked)."""

    path: Path
    magic: bytes
    version: int
    count: int
    entries: list[list]  # [id bytes, offset, length, raw size, encoding]
    pack_size: int
    pack_hash: bytes

    @property
    def pack(self) -> Path:
        return self.path.with_suffix(".pack")

    @property
    def name(self) -> str:
        return self.path.stem

    def position(self, oid: str) -> int:
        return next(i for i, e in enumerate(self.entries) if e[0].hex() == oid)

    def encode(self, count: int | None = None, checksum: bytes | None = None) -> bytes:
        fanout = [0] * 256
        for e in self.entries:
            fanout[e[0][0]] += 1
        for i in range(1, 256):
            fanout[i] += fanout[i - 1]
        body = IDX_HEADER.pack(self.magic, self.version, len(self.entries) if count is None else count, 0) + \
            struct.pack("<256I", *fanout) + b"".join(IDX_ENTRY.pack(*e) for e in self.entries) + \
            struct.pack("<Q16s", self.pack_size, self.pack_hash)
        return body + (checksum if checksum is not None else xxhash.xxh3_128_digest(body))

    def write(self, data: bytes | None = None) -> None:
        os.chmod(self.path, 0o644)
        self.path.write_bytes(self.encode() if data is None else data)


def read_index(path: Path) -> Index:
    data = path.read_bytes()
    magic, version, count, _ = IDX_HEADER.unpack_from(data)
    start = IDX_HEADER.size + FANOUT_BYTES
    entries = [list(IDX_ENTRY.unpack_from(data, start + i * IDX_ENTRY.size)) for i in range(count)]
    pack_size, pack_hash, _ = IDX_TRAILER.unpack_from(data, len(data) - IDX_TRAILER.size)
    return Index(path, magic, version, count, entries, pack_size, pack_hash)


def pack_dir(store: Path) -> Path:
    return store / "objects" / "pack"


def indexes(store: Path) -> list[Index]:
    return [read_index(p) for p in sorted(pack_dir(store).glob("pack-*.idx"))]


def index_holding(store: Path, oid: str) -> Index:
    return next(ix for ix in indexes(store) if any(e[0].hex() == oid for e in ix.entries))


def append_to_pack(ix: Index, data: bytes) -> int:
    """Append ``data`` to the pack of ``ix`` and update its size and hash in ``ix``; the offset of ``data``."""
    os.chmod(ix.pack, 0o644)
    with open(ix.pack, "ab") as f:
        offset = f.tell()
        f.write(data)
    ix.pack_size = ix.pack.stat().st_size
    ix.pack_hash = xxhash.xxh3_128_digest(ix.pack.read_bytes())
    return offset


def container(raw_size: int, payload: bytes) -> bytes:
    """A compressed-object container (``AVZ1``, codec 1, one zstd group) announcing ``raw_size`` bytes."""
    return b"AVZ1" + struct.pack("<BQ", 1, raw_size) + struct.pack("<B", 1) + struct.pack("<BQ", 1, len(payload)) \
        + payload


# -- repositories and what each version must check out as ---------------------------------------------------------
def files_of(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of the regular files below ``folder`` (the store and checkout debris excluded)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel.startswith(".adaptvc") or p.is_symlink() or not p.is_file():
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Packed:
    """A format-2 repository with v1 (tag v1) and v2 (HEAD), one pack each, and what each version holds."""

    work: Path
    expected: dict[str, dict[str, str]]
    blob: str  # the largest tensor blob of v2 (not in v1)
    blob_size: int

    @property
    def store(self) -> Path:
        return self.work / ".adaptvc"


def make_packed(folder: Path, mbytes: int = 0, remote: Path | None = None) -> Packed:
    """With ``remote``, each version is pushed there as it is made (one pack per push on the remote too)."""
    work = big_adapter(folder, seed=1, mbytes=mbytes) if mbytes else write_adapter(folder, seed=1)
    repo = Repository.init(work)
    assert repo.store_format == 2
    repo.commit("v1")
    repo.tag("v1")
    if remote is not None:
        repo.add_remote("origin", str(remote))
        repo.push(tags=True)
    expected = {"v1": files_of(work)}
    big_adapter(work, seed=2, mbytes=mbytes) if mbytes else write_adapter(work, seed=2)
    repo.commit("v2")
    if remote is not None:
        repo.push()
    expected["v2"] = expected["HEAD"] = files_of(work)
    _, t = max(repo.show("HEAD").snapshot.tensors(), key=lambda nt: nt[1].size)
    assert len(indexes(work / ".adaptvc")) == 2
    return Packed(work, expected, t.blob, t.size)


@pytest.fixture
def packed(tmp_path) -> Packed:
    return make_packed(tmp_path / "work")


def refused(res, *any_of: str) -> str:
    """One line, exit 1, no traceback, not an internal error, naming at least one of ``any_of``."""
    line = assert_refused(res)
    assert "internal error" not in line, line
    if any_of:
        assert any(n in line for n in any_of), (any_of, line)
    return line


def output(res) -> str:
    if isinstance(res, Result):
        return res.stdout + res.stderr
    return (res.stdout or b"").decode("utf-8", "replace") + (res.stderr or b"").decode("utf-8", "replace")


def checks_out(work: Path, rev: str, out: Path, expected: dict[str, str]) -> None:
    ok(cli(work, "checkout", rev, "-o", str(out)))
    assert files_of(out) == expected


def no_adapter_written(out: Path) -> None:
    assert not out.exists() or not any(p.name.startswith("adapter_") for p in out.rglob("*")), \
        sorted(p.name for p in out.rglob("*"))


def fsck_names(work: Path, *any_of: str) -> None:
    res = cli(work, "fsck")
    text = output(res)
    assert res.exit_code == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert any(n in text for n in any_of), (any_of, text)


# -- forged indexes and entries ----------------------------------------------------------------------------------
def _swap_first_two(ix: Index, i: int) -> None:
    ix.entries[0], ix.entries[1] = ix.entries[1], ix.entries[0]


def _duplicate(ix: Index, i: int) -> None:
    ix.entries[1][0] = ix.entries[0][0]


def _set(field: int, value):
    def edit(ix: Index, i: int) -> None:
        ix.entries[i][field] = value(ix, ix.entries[i]) if callable(value) else value
    return edit


def _other_objects_bytes(ix: Index, i: int) -> None:
    j = next(k for k, e in enumerate(ix.entries) if k != i and e[2] >= 16)
    ix.entries[i][1] = ix.entries[j][1]


INDEX_DAMAGE = {
    # the index as a whole (header, sizes, order, checksum)
    "truncated": lambda ix, i: ix.write(ix.encode()[: IDX_HEADER.size + FANOUT_BYTES + IDX_ENTRY.size // 2]),
    "count-2^26": lambda ix, i: ix.write(ix.encode(count=1 << 26)),
    "count-2^32-1": lambda ix, i: ix.write(ix.encode(count=(1 << 32) - 1)),
    "count-one-more-than-its-size": lambda ix, i: ix.write(ix.encode(count=len(ix.entries) + 1)),
    "entries-out-of-order": lambda ix, i: (_swap_first_two(ix, i), ix.write()),
    "same-id-twice": lambda ix, i: (_duplicate(ix, i), ix.write()),
    "lying-index-checksum": lambda ix, i: (_set(1, lambda ix, e: e[1] + 8)(ix, i),
                                           ix.write(ix.encode(checksum=b"\x01" * 16))),
    "not-an-index": lambda ix, i: ix.write(b"AVIX" + b"\xff" * 2000),
    "pack-size-lies": lambda ix, i: (setattr(ix, "pack_size", ix.pack_size + 4096), ix.write()),
}

ENTRY_DAMAGE = {
    "offset-past-the-end": _set(1, lambda ix, e: ix.pack_size + 100),
    "offset-2^63": _set(1, 1 << 63),
    "overlaps-the-header": _set(1, 0),
    "length-past-the-end": _set(2, lambda ix, e: ix.pack_size),
    "other-objects-bytes": _other_objects_bytes,
    "raw-size-lies": _set(3, lambda ix, e: e[3] - 4),
    "raw-and-stored-size-2^62": lambda ix, i: (_set(2, 1 << 62)(ix, i), _set(3, 1 << 62)(ix, i)),
    "unknown-encoding": _set(4, 7),
    "raw-bytes-marked-compressed": _set(4, 1),
}


def damage(store: Path, oid: str, kind: str) -> Index:
    ix = index_holding(store, oid)
    i = ix.position(oid)
    if kind in INDEX_DAMAGE:
        INDEX_DAMAGE[kind](ix, i)
    else:
        ENTRY_DAMAGE[kind](ix, i)
        ix.write()
    return ix


@pytest.mark.parametrize("kind", [*INDEX_DAMAGE, *ENTRY_DAMAGE])
def test_a_forged_index_is_refused_in_one_line_and_never_yields_a_wrong_byte(packed, tmp_path, kind):
    ix = damage(packed.store, packed.blob, kind)
    out = tmp_path / "out"
    refused(cli(packed.work, "checkout", "HEAD", "-o", str(out)), ix.name, packed.blob)
    no_adapter_written(out)
    fsck_names(packed.work, ix.name, packed.blob)


@pytest.mark.parametrize("kind", ["lying-index-checksum", "count-one-more-than-its-size", "offset-past-the-end"])
def test_a_damaged_pack_does_not_take_down_the_versions_that_do_not_need_it(packed, tmp_path, kind):
    """Its objects are unavailable, never wrong — and only its objects."""
    damage(packed.store, packed.blob, kind)
    (packed.store / "commit-cache").unlink(missing_ok=True)
    assert [c["message"] for c in json.loads(ok(cli(packed.work, "log", "--json")).stdout)] == ["v2", "v1"]
    checks_out(packed.work, "v1", tmp_path / "v1", packed.expected["v1"])


def test_a_lying_pack_hash_costs_nothing_but_a_report(packed, tmp_path):
    """The trailer's hash of the whole pack is wrong (the index's own checksum is right): every object still
    hashes to its id, so every version checks out byte for byte."""
    ix = index_holding(packed.store, packed.blob)
    ix.pack_hash = b"\x00" * 16
    ix.write()
    checks_out(packed.work, "HEAD", tmp_path / "head", packed.expected["HEAD"])
    checks_out(packed.work, "v1", tmp_path / "v1", packed.expected["v1"])


def test_a_pack_shorter_than_its_index_says_is_refused(packed, tmp_path):
    ix = index_holding(packed.store, packed.blob)
    os.chmod(ix.pack, 0o644)
    os.truncate(ix.pack, ix.pack_size // 2)
    out = tmp_path / "out"
    refused(cli(packed.work, "checkout", "HEAD", "-o", str(out)), ix.name, packed.blob)
    no_adapter_written(out)
    fsck_names(packed.work, ix.name, packed.blob)
    checks_out(packed.work, "v1", tmp_path / "v1", packed.expected["v1"])


# -- compressed entries: bombs and impossible sizes ---------------------------------------------------------------
def forge_compressed(store: Path, oid: str, stored: bytes, raw_size: int) -> Index:
    """Make ``oid``'s entry point at ``stored`` (appended to its pack) as a compressed object (encoding 1)."""
    ix = index_holding(store, oid)
    i = ix.position(oid)
    ix.entries[i][1] = append_to_pack(ix, stored)
    ix.entries[i][2:5] = [len(stored), raw_size, 1]
    ix.write()
    return ix


COMPRESSED_LIES = {
    # the container announces 2^62 bytes; the entry tells the truth about the object's size
    "container-declares-2^62": lambda size: (container(1 << 62, b""), size),
    # both the entry and its container announce 2^62 bytes
    "entry-declares-2^62": lambda size: (container(1 << 62, b""), 1 << 62),
    # a 1.5 GB zstd bomb under a container and an entry announcing the object's true size
    "bomb-announcing-the-true-size": lambda size: (container(size, zstd_bomb(1500)), size),
    # the same bomb, honestly announced as 1.5 GB by container and entry (the snapshot says otherwise)
    "bomb-announcing-1.5-GB": lambda size: (container(1500 << 20, zstd_bomb(1500)), 1500 << 20),
}


@pytest.mark.parametrize("kind", list(COMPRESSED_LIES))
def test_a_lying_compressed_entry_costs_bounded_memory_and_one_line(packed, tmp_path, kind):
    stored, raw_size = COMPRESSED_LIES[kind](packed.blob_size)
    ix = forge_compressed(packed.store, packed.blob, stored, raw_size)
    out = tmp_path / "out"
    for args in (["checkout", "HEAD", "-o", str(out)], ["fsck"]):
        peak, code, err = peak_rss(packed.work, *args)
        assert "Traceback" not in err and "internal error" not in err and code == 1, err
        assert packed.blob in err or ix.name in err or args == ["fsck"], err
        assert peak < 150, (args, peak)
    no_adapter_written(out)
    fsck_names(packed.work, packed.blob, ix.name)


# -- memory: an index is read within bounds --------------------------------------------------------------------
def test_an_index_claiming_2_to_the_26_entries_is_refused_without_reading_gigabytes(packed):
    """A sparse file of exactly the size 2^26 entries need (3.2 GB, a few KB on disk) and a wrong checksum."""
    ix = index_holding(packed.store, packed.blob)
    count = 1 << 26
    size = IDX_HEADER.size + FANOUT_BYTES + count * IDX_ENTRY.size + IDX_TRAILER.size
    os.chmod(ix.path, 0o644)
    with open(ix.path, "r+b") as f:
        f.write(IDX_HEADER.pack(b"AVIX", 2, count, 0))
        f.truncate(size)
    peak, code, err = peak_rss(packed.work, "fsck")
    assert "Traceback" not in err and code == 1, err
    assert ix.name in err, err
    assert peak < 150, peak


def _limited(megabytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return limit


def test_reading_a_packed_store_needs_no_more_address_space_than_a_loose_one(tmp_path):
    """A machine (or a ulimit -v) with 2 GB of address space: a format-1 store checks out there, so must a
    format-2 one (nothing may reserve memory by the largest size an index could have)."""
    loose = write_adapter(tmp_path / "loose", seed=1)
    Repository.init(loose)
    loose_store(loose)
    ok(cli(loose, "commit", "-m", "v1"))
    packed = make_packed(tmp_path / "packed")
    for work, expected in ((loose, files_of(loose)), (packed.work, packed.expected["HEAD"])):
        (work / ".adaptvc" / "commit-cache").unlink(missing_ok=True)
        out = tmp_path / f"out-{work.name}"
        res = subprocess.run([*CLI, "-C", str(work), "checkout", "HEAD", "-o", str(out)], env=ENV,
                             capture_output=True, text=True, timeout=120, preexec_fn=_limited(2048))
        assert res.returncode == 0, (work.name, res.stderr)
        assert files_of(out) == expected


# -- links: an index, a pack, the pack folder ------------------------------------------------------------------
def plant_link(store: Path, oid: str, what: str, outside: Path) -> Index:
    """Replace the index, the pack or the whole pack folder holding ``oid`` by a link to an intact copy of it
    outside the store (following the link would 'work': only refusing it is right)."""
    ix = index_holding(store, oid)
    outside.mkdir(parents=True, exist_ok=True)
    if what == "pack-folder":
        copy = outside / "pack"
        shutil.copytree(pack_dir(store), copy)
        shutil.rmtree(pack_dir(store))
        pack_dir(store).symlink_to(copy, target_is_directory=True)
        return ix
    victim = ix.path if what == "index" else ix.pack
    shutil.copy2(victim, outside / victim.name)
    victim.unlink()
    victim.symlink_to(outside / victim.name)
    return ix


LINKS = ["index", "pack", "pack-folder"]


def names_something(ix: Index, oid: str) -> tuple[str, ...]:
    """What a refusal caused by a link may name: the pack, the object, the link (or that the object is missing,
    since a pack folder that is a link is, rightly, not looked into)."""
    return (ix.name, oid, "objects/pack", "symbolic link", "missing")


@pytest.mark.parametrize("what", LINKS)
def test_a_linked_pack_index_or_pack_folder_is_never_followed(packed, tmp_path, what):
    outside = tmp_path / "outside"
    ix = plant_link(packed.store, packed.blob, what, outside)
    before = files_of(outside)
    out = tmp_path / "out"
    refused(cli(packed.work, "checkout", "HEAD", "-o", str(out)), *names_something(ix, packed.blob))
    no_adapter_written(out)
    res = cli(packed.work, "fsck")
    assert res.exit_code == 1 and "Traceback" not in output(res), output(res)
    write_adapter(packed.work, seed=3)
    res = cli(packed.work, "commit", "-m", "v3")
    if what == "pack-folder":  # a commit would have to write its pack through the link
        refused(res, "symbolic link", "objects/pack", "missing")
    assert files_of(outside) == before, "something was written through the link"


# -- a folder remote: a bare store that other people can write ----------------------------------------------------
@dataclass
class Remote:
    root: Path
    origin: Packed


@pytest.fixture
def remote(tmp_path) -> Remote:
    root = tmp_path / "remote"
    origin = make_packed(tmp_path / "origin", remote=root)
    assert len(indexes(root)) == 2
    return Remote(root, origin)


REMOTE_DAMAGE = ["count-2^26", "count-one-more-than-its-size", "entries-out-of-order", "lying-index-checksum",
                 "pack-size-lies", "offset-past-the-end", "overlaps-the-header", "other-objects-bytes",
                 "raw-size-lies", "raw-and-stored-size-2^62", "unknown-encoding"]


@pytest.mark.parametrize("kind", REMOTE_DAMAGE)
def test_a_forged_index_on_a_folder_remote_is_refused_by_clone(remote, tmp_path, kind):
    ix = damage(remote.root, remote.origin.blob, kind)
    target = tmp_path / "clone"
    refused(cli(tmp_path, "clone", str(remote.root), str(target)), ix.name, remote.origin.blob)
    assert not target.exists()


@pytest.mark.parametrize("kind", ["lying-index-checksum", "offset-past-the-end", "short-pack"])
def test_fetch_of_a_forged_pack_changes_nothing_here(remote, tmp_path, kind):
    """A clone made before the damage fetches v3, whose pack on the remote is forged."""
    clone = Repository.clone(str(remote.root), tmp_path / "clone")
    write_adapter(remote.origin.work, seed=3)
    origin = Repository(remote.origin.work)
    origin.commit("v3")
    origin.push()
    v3 = origin.show("HEAD").snapshot
    _, t = max(v3.tensors(), key=lambda nt: nt[1].size)
    if kind == "short-pack":
        ix = index_holding(remote.root, t.blob)
        os.chmod(ix.pack, 0o644)
        os.truncate(ix.pack, ix.pack_size - 7)
    else:
        ix = damage(remote.root, t.blob, kind)
    tracking = clone.refs.read("refs/remotes/origin/main")
    before = {i.name: i.path.read_bytes() for i in indexes(clone.admin_dir)}
    refused(cli(clone.work_tree, "fetch"), ix.name, t.blob)
    assert clone.refs.read("refs/remotes/origin/main") == tracking
    assert {i.name: i.path.read_bytes() for i in indexes(clone.admin_dir)} == before
    ok(cli(clone.work_tree, "fsck"))
    refused(cli(clone.work_tree, "pull"), ix.name, t.blob)
    assert files_of(clone.work_tree) == remote.origin.expected["HEAD"]


def test_a_short_pack_on_a_folder_remote_is_refused_by_clone(remote, tmp_path):
    ix = index_holding(remote.root, remote.origin.blob)
    os.chmod(ix.pack, 0o644)
    os.truncate(ix.pack, ix.pack_size // 2)
    target = tmp_path / "clone"
    refused(cli(tmp_path, "clone", str(remote.root), str(target)), ix.name, remote.origin.blob)
    assert not target.exists()


@pytest.mark.parametrize("kind", ["bomb-announcing-the-true-size", "entry-declares-2^62"])
def test_a_compressed_bomb_on_a_folder_remote_costs_bounded_memory(remote, tmp_path, kind):
    stored, raw_size = COMPRESSED_LIES[kind](remote.origin.blob_size)
    ix = forge_compressed(remote.root, remote.origin.blob, stored, raw_size)
    peak, code, err = peak_rss(None, "clone", str(remote.root), str(tmp_path / "clone"), cwd=tmp_path)
    assert "Traceback" not in err and "internal error" not in err and code == 1, err
    assert remote.origin.blob in err or ix.name in err, err
    assert peak < 150, peak
    assert not (tmp_path / "clone").exists()


@pytest.mark.parametrize("what", LINKS)
def test_a_linked_pack_on_a_folder_remote_is_never_followed(remote, tmp_path, what):
    outside = tmp_path / "outside"
    ix = plant_link(remote.root, remote.origin.blob, what, outside)
    before = files_of(outside)
    target = tmp_path / "clone"
    refused(cli(tmp_path, "clone", str(remote.root), str(target)), *names_something(ix, remote.origin.blob))
    assert not target.exists()
    # and a push into it never writes through the link
    write_adapter(remote.origin.work, seed=3)
    ok(cli(remote.origin.work, "commit", "-m", "v3"))
    res = cli(remote.origin.work, "push")
    if what == "pack-folder":
        refused(res, "symbolic link", "objects/pack")
    assert files_of(outside) == before, "something was written through the link"
    left = [n for n in os.listdir(remote.root / "tmp") if n.endswith("pack")]
    assert left == [], f"a refused push left its temporary pack on the remote (nothing gc's a remote): {left}"


# -- the same object in two packs, one copy corrupt ---------------------------------------------------------------
def duplicate_pack(store: Path, oid: str, name: str, corrupt: bool) -> Index:
    """A second pack holding the same objects as the one holding ``oid`` under another name, ``oid``'s copy
    in it damaged (one flipped byte; its index still consistent with the pack, as after a disk error)."""
    src = index_holding(store, oid)
    dup = Index(pack_dir(store) / f"{name}.idx", src.magic, src.version, src.count,
                [list(e) for e in src.entries], src.pack_size, src.pack_hash)
    data = bytearray(src.pack.read_bytes())
    if corrupt:
        e = dup.entries[dup.position(oid)]
        data[e[1] + e[2] // 2] ^= 0xFF
    dup.pack.write_bytes(bytes(data))
    dup.pack_hash = xxhash.xxh3_128_digest(bytes(data))
    dup.path.write_bytes(dup.encode())
    return dup


FIRST, LAST = "pack-" + "0" * 32, "pack-" + "f" * 32


@pytest.mark.parametrize("order", ["corrupt-copy-first", "corrupt-copy-last"])
def test_a_corrupt_copy_in_one_pack_does_not_hide_the_good_copy_in_another(packed, tmp_path, order):
    """Nothing lost: while one good copy of every object is in the store, every version checks out byte for
    byte, and gc (whatever it decides) keeps it so."""
    duplicate_pack(packed.store, packed.blob, FIRST if order == "corrupt-copy-first" else LAST, corrupt=True)
    checks_out(packed.work, "HEAD", tmp_path / "head", packed.expected["HEAD"])
    res = cli(packed.work, "gc", "--grace", "0")
    if res.exit_code != 0:
        refused(res, packed.blob, FIRST, LAST)
    for rev in ("v1", "HEAD"):
        checks_out(packed.work, rev, tmp_path / f"after-gc-{rev}", packed.expected[rev])


@pytest.mark.parametrize("order", ["corrupt-copy-first", "corrupt-copy-last"])
def test_fsck_sees_the_damage_that_stops_gc(packed, order):
    """gc refuses to run on a damaged store and sends the user to fsck: fsck must then name that damage."""
    dup = duplicate_pack(packed.store, packed.blob, FIRST if order == "corrupt-copy-first" else LAST, corrupt=True)
    res = cli(packed.work, "gc", "--grace", "0")
    if res.exit_code != 0:
        refused(res, packed.blob, dup.name)
        fsck_names(packed.work, packed.blob, dup.name)


@pytest.mark.parametrize("order", ["corrupt-copy-first", "corrupt-copy-last"])
def test_a_corrupt_duplicate_on_a_folder_remote_does_not_hide_the_good_copy(remote, tmp_path, order):
    duplicate_pack(remote.root, remote.origin.blob, FIRST if order == "corrupt-copy-first" else LAST, corrupt=True)
    target = tmp_path / "clone"
    ok(cli(tmp_path, "clone", str(remote.root), str(target)))
    assert files_of(target) == remote.origin.expected["HEAD"]
    ok(cli(target, "fsck"))


# -- kills at chosen moments: a real SIGKILL, sent by the process to itself ----------------------------------------
#: ``python -c KILL_RUNNER POINT ARGS...``: run ``adaptvc ARGS`` (or ``--upgrade WORK``: Repository.upgrade) and
#: SIGKILL the process at POINT: ``append:N`` (the Nth object appended to a pack being written),
#: ``after-rename:REGEX`` / ``before-rename:REGEX`` (a rename whose destination name matches), ``config`` (just
#: before the repository's config is rewritten).
KILL_RUNNER = r"""
import os, re, signal, sys
from adaptvc.storage import pack
point, argv = sys.argv[1], sys.argv[2:]
kind, _, arg = point.partition(":")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "append":
    calls = [0]
    def counting(real):
        def f(*a, **k):
            calls[0] += 1
            if calls[0] == int(arg):
                die()
            return real(*a, **k)
        return f
    pack.PackWriter.append = counting(pack.PackWriter.append)
    pack.PackWriter.append_stream = counting(pack.PackWriter.append_stream)
elif kind in ("after-rename", "before-rename"):
    real_rename = os.rename
    def rename(src, dst, *a, **k):
        hit = re.search(arg, os.fsdecode(dst)) is not None
        if hit and kind == "before-rename":
            die()
        real_rename(src, dst, *a, **k)
        if hit:
            die()
    os.rename = rename
elif kind == "config":
    from adaptvc import repository
    repository.Repository._write_config = lambda self: die()
if argv[0] == "--upgrade":
    from adaptvc import Repository
    Repository(argv[1]).upgrade()
else:
    from adaptvc.cli.main import main
    main(argv)
"""


def killed_at(point: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", KILL_RUNNER, point, *args], env=ENV, capture_output=True,
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, (point, res.returncode, res.stderr.decode())
    return res


def debris(store: Path) -> list[str]:
    """What a finished adaptvc leaves behind nowhere: temporary files, packs without an index and indexes
    without a pack, write sessions of dead processes."""
    left = [f"tmp/{n}" for n in os.listdir(store / "tmp")] if (store / "tmp").is_dir() else []
    if (store / "writers").is_dir():
        left += [f"writers/{n}" for n in os.listdir(store / "writers")]
    names = set(os.listdir(pack_dir(store))) if pack_dir(store).is_dir() else set()
    for n in sorted(names):
        stem, _, ext = n.rpartition(".")
        pair = f"{stem}.idx" if ext == "pack" else f"{stem}.pack"
        if not (n.startswith("pack-") and ext in ("pack", "idx") and pair in names):
            left.append(f"objects/pack/{n}")
    return left


def assert_whole(work: Path, expected: dict[str, dict[str, str]], out: Path) -> None:
    """Every version checks out byte for byte and fsck is clean."""
    for rev, files in expected.items():
        checks_out(work, rev, out / rev, files)
    ok(cli(work, "fsck"))


COMMIT_KILLS = [
    "append:2",  # while the pack is written in tmp/
    r"after-rename:^pack-\w+\.pack$",  # the pack is in objects/pack, its index is not
    r"before-rename:^pack-\w+\.idx$",  # the index is written under a temporary name in objects/pack
    r"after-rename:^pack-\w+\.idx$",  # pack and index in place, no commit names them yet
]


@pytest.mark.parametrize("point", COMMIT_KILLS)
def test_a_commit_killed_at_any_point_leaves_a_whole_store_and_gc_removes_its_debris(packed, tmp_path, point):
    write_adapter(packed.work, seed=3)
    killed_at(point, "-C", str(packed.work), "commit", "-m", "v3")
    assert_whole(packed.work, {"v1": packed.expected["v1"], "HEAD": packed.expected["HEAD"]}, tmp_path / "a")
    ok(cli(packed.work, "gc", "--grace", "0"))
    left = debris(packed.store)
    assert left == [], left
    ok(cli(packed.work, "commit", "-m", "v3"))
    assert_whole(packed.work, {"v1": packed.expected["v1"], "HEAD": files_of(packed.work)}, tmp_path / "b")


def _sigkill_while_a_pack_is_written(work: Path, args: list[str], store: Path) -> bool:
    """Start ``adaptvc ARGS``; SIGKILL it as soon as a temporary pack in tmp/ holds some bytes. True when
    killed mid-write (False: it finished first)."""
    p = subprocess.Popen([*CLI, "-C", str(work), *args], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    tmp = store / "tmp"
    deadline = time.monotonic() + 60
    try:
        while p.poll() is None and time.monotonic() < deadline:
            try:
                sizes = [os.stat(tmp / n).st_size for n in os.listdir(tmp) if n.endswith("pack")]
            except FileNotFoundError:
                continue
            if any(s > 1 << 20 for s in sizes):
                p.send_signal(signal.SIGKILL)
                p.wait()
                return True
        return False
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.slow
def test_sigkill_during_the_commit_of_a_50_mb_adapter(tmp_path):
    big = make_packed(tmp_path / "work", mbytes=2)
    for seed in range(10, 15):
        big_adapter(big.work, seed=seed, mbytes=48)
        if _sigkill_while_a_pack_is_written(big.work, ["commit", "-q", "-m", "big"], big.store):
            break
    else:
        pytest.fail("the commit always finished before it could be killed")
    assert any(n.startswith(".adaptvc-tmp-") for n in os.listdir(big.store / "tmp"))
    ok(cli(big.work, "fsck"))
    ok(cli(big.work, "gc", "--grace", "0"))
    left = debris(big.store)
    assert left == [], left
    assert_whole(big.work, {"v1": big.expected["v1"], "HEAD": big.expected["HEAD"]}, tmp_path / "out")


def test_a_temporary_pack_of_a_killed_commit_goes_with_the_next_default_gc_once_old(tmp_path):
    big = make_packed(tmp_path / "work", mbytes=2)
    for seed in range(10, 15):
        big_adapter(big.work, seed=seed, mbytes=24)
        if _sigkill_while_a_pack_is_written(big.work, ["commit", "-q", "-m", "big"], big.store):
            break
    else:
        pytest.fail("the commit always finished before it could be killed")
    old = time.time() - 7200
    for n in os.listdir(big.store / "tmp"):
        os.utime(big.store / "tmp" / n, (old, old))
    ok(cli(big.work, "gc"))
    left = debris(big.store)
    assert left == [], left


@pytest.mark.soak
def test_many_commits_killed_at_random_moments_leave_a_whole_store_and_no_debris(tmp_path):
    import random

    big = make_packed(tmp_path / "work", mbytes=2)
    rng = random.Random(5)
    for seed in range(30, 42):
        big_adapter(big.work, seed=seed, mbytes=24)
        p = subprocess.Popen([*CLI, "-C", str(big.work), "commit", "-q", "-m", f"s{seed}"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
    ok(cli(big.work, "fsck"))
    ok(cli(big.work, "gc", "--grace", "0"))
    left = debris(big.store)
    assert left == [], left
    assert_whole(big.work, {"v1": big.expected["v1"]}, tmp_path / "out")


GC_KILLS = [
    "append:3",  # while the consolidated pack is written
    r"after-rename:^pack-\w+\.idx$",  # the new pack is in place, the old ones too
    r"after-rename:gc-idx$",  # an old pack's index is taken away, the pack itself not yet
    r"after-rename:gc-pack$",  # an old pack and its index are in tmp/, not yet deleted
    r"after-rename:-gc$",  # a loose (commit) object, copied into the new pack, is being removed
]


def with_garbage(packed: Packed) -> None:
    """An unreachable version (its branch deleted, its reflog expired) so that gc has something to drop."""
    repo = Repository(packed.work)
    repo.branch("scratch")
    repo.switch("scratch")
    write_adapter(packed.work, seed=9)
    repo.commit("garbage")
    repo.switch("main")
    repo.delete_branch("scratch")
    for log in (packed.store / "logs").rglob("*"):
        if log.is_file():
            log.write_text("")


@pytest.mark.parametrize("point", GC_KILLS)
def test_gc_killed_at_any_point_leaves_every_version_byte_for_byte(packed, tmp_path, point):
    with_garbage(packed)
    killed_at(point, "-C", str(packed.work), "gc", "--grace", "0")
    expected = {"v1": packed.expected["v1"], "HEAD": packed.expected["HEAD"]}
    assert_whole(packed.work, expected, tmp_path / "a")
    ok(cli(packed.work, "gc", "--grace", "0"))
    left = debris(packed.store)
    assert left == [], left
    assert_whole(packed.work, expected, tmp_path / "b")


@pytest.mark.soak
def test_gc_killed_at_random_moments_never_loses_a_version(tmp_path):
    import random

    big = make_packed(tmp_path / "work", mbytes=8)
    expected = {"v1": big.expected["v1"], "HEAD": big.expected["HEAD"]}
    rng = random.Random(11)
    for round_ in range(12):
        if round_ % 3 == 0:
            with_garbage(big)
        args = ["gc", "--grace", "0", *(["--aggressive"] if round_ % 2 else [])]
        p = subprocess.Popen([*CLI, "-C", str(big.work), *args], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.8))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert_whole(big.work, expected, tmp_path / f"round-{round_}")
    ok(cli(big.work, "gc", "--grace", "0"))
    left = debris(big.store)
    assert left == [], left


@pytest.mark.parametrize("point", ["append:4", r"after-rename:^pack-\w+\.idx$", r"after-rename:-gc$", "config"])
def test_an_upgrade_killed_midway_finishes_when_run_again(tmp_path, point):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    loose_store(work)
    repo = Repository(work)
    repo.commit("v1")
    repo.tag("v1")
    expected = {"v1": files_of(work)}
    write_adapter(work, seed=2)
    repo.commit("v2")
    expected["HEAD"] = files_of(work)
    assert Repository(work).store_format == 1
    killed_at(point, "--upgrade", str(work))
    assert_whole(work, expected, tmp_path / "midway")
    report = Repository(work).upgrade()
    assert report["to"] == 2 and Repository(work).store_format == 2
    assert_whole(work, expected, tmp_path / "after")
    store = work / ".adaptvc"
    loose = [p for d in (store / "objects").iterdir() if len(d.name) == 2 for p in d.iterdir()]
    assert loose == []
    ok(cli(work, "gc", "--grace", "0"))
    left = debris(store)
    assert left == [], left


def test_adaptvc_upgrade_moves_a_format_1_store_to_packs_and_says_so(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work)
    loose_store(work)
    ok(cli(work, "commit", "-m", "v1"))
    expected = {"HEAD": files_of(work)}
    ok(cli(work, "upgrade"))
    assert Repository(work).store_format == 2 and indexes(work / ".adaptvc")
    ok(cli(work, "upgrade"))  # again: nothing to do
    assert_whole(work, expected, tmp_path / "out")


# -- a pack replaced or rewritten while a reader has it open -------------------------------------------------------
#: ``python -c SWAP_RUNNER MODE ARGS...``: run ``adaptvc ARGS``; the first time the reader touches a pack, the pack
#: file is replaced as another process would: ``rename-before-open`` / ``rename-while-open`` (a copy with every
#: stored byte flipped is renamed over it, before the reader opens it / once it reads from it), or
#: ``truncate-while-reading`` / ``truncate-while-decompressing`` (the same file cut down to its header in place,
#: once a raw object is being read / once a compressed one is being decoded).
SWAP_RUNNER = r"""
import os, sys
from adaptvc.storage import disk_objects, pack
mode, argv = sys.argv[1], sys.argv[2:]
done = []

def swap(path):
    if done:
        return
    done.append(path)
    if mode.startswith("rename"):
        data = bytearray(open(path, "rb").read())
        for i in range(12, len(data)):
            data[i] ^= 0xFF
        tmp = path.with_name(".evil.tmp")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)
    else:
        os.chmod(path, 0o644)
        os.truncate(path, 12)

if mode == "rename-before-open":
    real_open = disk_objects.DiskObjectStore._open_pack
    def _open_pack(self, index):
        if not index.is_open:
            swap(index.pack_path)
        return real_open(self, index)
    disk_objects.DiskObjectStore._open_pack = _open_pack
elif mode in ("rename-while-open", "truncate-while-reading"):
    real_read = pack.PackIndex.read_into
    def read_into(self, entry, position, buffer):
        swap(self.pack_path)
        return real_read(self, entry, position, buffer)
    pack.PackIndex.read_into = read_into
elif mode == "truncate-while-decompressing":
    real_view = pack.PackIndex.view
    def view(self, entry):
        v = real_view(self, entry)
        swap(self.pack_path)
        return v
    pack.PackIndex.view = view
from adaptvc.cli.main import main
main(argv)
"""


@pytest.mark.parametrize("mode", ["rename-before-open", "rename-while-open", "truncate-while-reading",
                                  "truncate-while-decompressing"])
def test_a_pack_replaced_under_a_reader_never_yields_a_wrong_byte(tmp_path, mode):
    packed = make_packed(tmp_path / "work", mbytes=1)
    if mode == "truncate-while-decompressing":  # every tensor stored compressed, in one pack
        ok(cli(packed.work, "gc", "--aggressive", "--grace", "0"))
        assert Repository(packed.work).store.is_compressed(packed.blob)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", SWAP_RUNNER, mode, "-C", str(packed.work), "checkout", "HEAD",
                          "-o", str(out)], env=ENV, capture_output=True, timeout=120)
    assert res.returncode in (0, 1), f"killed by signal {signal.Signals(-res.returncode).name}: {res.stderr!r}"
    if res.returncode == 0:
        assert files_of(out) == packed.expected["HEAD"]
    else:
        line = refused(res)
        assert re.search(r"pack-|[0-9a-f]{32}", line), line  # names the pack or an object
        no_adapter_written(out)


# -- gc racing a writer that reuses objects of an old pack ---------------------------------------------------------
def old_unreachable_pack(packed: Packed, tmp_path: Path, seed: int) -> tuple[Path, dict[str, str]]:
    """Objects of an adapter (seed ``seed``) in a pack of their own, two hours old and reachable from nothing;
    returns that adapter's folder and files."""
    scratch = write_adapter(tmp_path / f"scratch-{seed}", seed=seed)
    Repository.init(scratch).commit("scratch")
    for ix in indexes(scratch / ".adaptvc"):
        for p in (ix.pack, ix.path):
            shutil.copy2(p, pack_dir(packed.store) / p.name)
            old = time.time() - 7200
            os.utime(pack_dir(packed.store) / p.name, (old, old))
    return scratch, files_of(scratch)


@pytest.mark.parametrize("pause", ["_verify_all", "_retire_pack"])
def test_gc_never_removes_an_old_pack_a_commit_reuses_while_it_runs(packed, tmp_path, monkeypatch, pause):
    """gc has decided the old pack is garbage; it is paused (before it copies, or before it retires the old
    pack) while a commit reuses every object of that pack (freshening it) and moves its branch."""
    import threading

    from adaptvc.storage.disk_objects import DiskObjectStore

    scratch, expected = old_unreachable_pack(packed, tmp_path, seed=7)
    garbage = set(Repository(packed.work).gc(dry_run=True).removed)
    scratch_blobs = {t.blob for _, t in Repository(scratch).show("HEAD").snapshot.tensors()}
    assert scratch_blobs <= garbage, "the old pack is not garbage: the race below would prove nothing"
    paused, release = threading.Event(), threading.Event()
    real = getattr(DiskObjectStore, pause)

    def pausing(self, *args, **kwargs):
        if not paused.is_set():
            paused.set()
            assert release.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DiskObjectStore, pause, pausing)
    errors: list[BaseException] = []

    def run_gc() -> None:
        try:
            Repository(packed.work).gc()
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=run_gc)
    t.start()
    try:
        assert paused.wait(60), "gc never reached the point where it decides"
        write_adapter(packed.work, seed=7)
        before = [ix.name for ix in indexes(packed.store)]
        ok(proc(packed.work, "commit", "-q", "-m", "reuses the old pack"))
        assert [ix.name for ix in indexes(packed.store)] == before, "the commit wrote the objects again"
    finally:
        release.set()
        t.join(120)
    assert errors == []
    assert_whole(packed.work, {"HEAD": expected, "v1": packed.expected["v1"]}, tmp_path / "out")


@pytest.mark.soak
def test_gc_in_a_loop_never_loses_an_object_a_commit_reuses(tmp_path):
    """gc --grace 0 in a loop while versions made of the objects of old, unreachable packs are committed."""
    import threading

    packed = make_packed(tmp_path / "work")
    stop = threading.Event()
    errors: list[str] = []

    def gc_loop() -> None:
        while not stop.is_set():
            res = subprocess.run([*CLI, "-C", str(packed.work), "gc", "--grace", "0"], env=ENV, capture_output=True,
                                 text=True, timeout=120)
            if res.returncode != 0:
                errors.append(res.stderr)

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        for seed in range(20, 40):
            _, expected = old_unreachable_pack(packed, tmp_path, seed=seed)
            time.sleep(0.05 * (seed % 5))
            write_adapter(packed.work, seed=seed)
            ok(proc(packed.work, "commit", "-q", "-m", f"s{seed}"))
            checks_out(packed.work, "HEAD", tmp_path / f"out-{seed}", expected)
    finally:
        stop.set()
        t.join(120)
    assert errors == []
    ok(cli(packed.work, "fsck"))


# -- many packs: what one process may hold open is bounded -------------------------------------------------------
def split_into_single_object_packs(store: Path) -> int:
    """Rewrite every pack of ``store`` as one pack per object (what a remote written by many small pushes, or
    a planted store, looks like); the number of packs made."""
    made = 0
    for ix in indexes(store):
        data = ix.pack.read_bytes()
        for e in ix.entries:
            body = struct.pack("<4sII", b"AVPK", 2, 0) + data[e[1]: e[1] + e[2]]
            one = Index(ix.path, ix.magic, ix.version, 1, [[e[0], PACK_HEADER_BYTES, *e[2:]]], len(body),
                        xxhash.xxh3_128_digest(body))
            name = "pack-" + xxhash.xxh3_128_hexdigest(IDX_ENTRY.pack(*one.entries[0]))
            (pack_dir(store) / f"{name}.pack").write_bytes(body)
            (pack_dir(store) / f"{name}.idx").write_bytes(one.encode())
            made += 1
        for p in (ix.pack, ix.path):
            p.unlink()
    return made


def _few_files(n: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return limit


def test_a_store_of_more_packs_than_open_files_allowed_still_checks_out_and_clones(tmp_path):
    """300 packs of one object each (one push each), under a limit of 256 open files (macOS's default)."""
    remote = tmp_path / "remote"
    work = write_adapter(tmp_path / "work", seed=1, layers=80)
    repo = Repository.init(work)
    repo.commit("v1")
    expected = files_of(work)
    repo.add_remote("origin", str(remote))
    repo.push()
    assert split_into_single_object_packs(work / ".adaptvc") > 300
    assert split_into_single_object_packs(remote) > 300
    for args in (["-C", str(work), "checkout", "HEAD", "-o", str(tmp_path / "out")], ["-C", str(work), "fsck"],
                 ["clone", str(remote), str(tmp_path / "clone")]):
        res = subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=120,
                             preexec_fn=_few_files(256))
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr)
    assert files_of(tmp_path / "out") == expected
    assert files_of(tmp_path / "clone") == expected


# -- a pack or an index that is not a regular file -----------------------------------------------------------------
def plant_special(store: Path, oid: str, what: str) -> Index:
    """Replace the index or the pack holding ``oid`` by a named pipe (opening it for reading waits for a writer
    that never comes) or a folder."""
    ix = index_holding(store, oid)
    victim = ix.path if what.startswith("index") else ix.pack
    victim.unlink()
    if what.endswith("fifo"):
        os.mkfifo(victim)
    else:
        victim.mkdir()
    return ix


SPECIAL = ["index-fifo", "pack-fifo", "index-folder", "pack-folder"]


@pytest.mark.parametrize("what", SPECIAL)
def test_a_pack_or_index_that_is_a_pipe_or_a_folder_is_refused_without_hanging(packed, tmp_path, what):
    ix = plant_special(packed.store, packed.blob, what)
    out = tmp_path / "out"
    for args in (["checkout", "HEAD", "-o", str(out)], ["fsck"]):
        try:
            res = proc(packed.work, *args, timeout=4)  # a healthy checkout takes a fraction of a second
        except subprocess.TimeoutExpired:
            pytest.fail(f"adaptvc {args[0]} hangs on {what}")
        line = assert_refused(res, ix.name) if args[0] == "checkout" else output(res)
        assert "Traceback" not in line and "internal error" not in line, line
    no_adapter_written(out)


@pytest.mark.parametrize("what", ["index-fifo", "pack-fifo"])
def test_a_pipe_planted_in_a_folder_remote_cannot_hang_a_clone(remote, tmp_path, what):
    ix = plant_special(remote.root, remote.origin.blob, what)
    target = tmp_path / "clone"
    try:
        res = proc(None, "clone", str(remote.root), str(target), timeout=4, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"adaptvc clone hangs on {what}")
    assert_refused(res, ix.name)
    assert not target.exists()
