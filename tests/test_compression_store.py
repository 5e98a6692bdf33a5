"""``gc --aggressive`` with deltas, through the real store and the CLI: consecutive checkpoints stored as
differences from their parent's tensors, chains bounded, every version checked out byte for byte, bases kept
while a kept delta needs them, hostile deltas refused in one line."""

from __future__ import annotations

import json
import random
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from adaptvc import Repository
from adaptvc.errors import ChecksumMismatchError, CorruptObjectError, ObjectNotFoundError
from adaptvc.hashing import hash_bytes
from adaptvc.ops.compress_plan import plan_compression
from adaptvc.ops.reachability import walk
from adaptvc.storage.compression import MAX_CHAIN, base_of, compress
from adaptvc.storage.disk_objects import DiskObjectStore
from tests.light import assert_refused, cli, loose_store, ok, proc
from tests.objservers import s3_service  # noqa: F401 (fixture)

SHAPES = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (16, 256),
          "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (256, 16),
          "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": (16, 256),
          "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight": (256, 16)}


def bf16(shape, rng) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return (x.view(np.uint32) >> 16).astype("<u2")


def step(tensors: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
    """A training step: every number moves by a few ulps."""
    return {k: ((v.astype(np.int32) + rng.integers(-3, 4, v.shape)) & 0xFFFF).astype("<u2")
            for k, v in tensors.items()}


def save(folder: Path, tensors: dict[str, np.ndarray]) -> None:
    """A bf16 adapter in PEFT layout (safetensors written by hand: numpy has no bf16)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + tensors[name].nbytes]}
        offset += tensors[name].nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in sorted(tensors):
            f.write(tensors[name].tobytes())
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj"],
         "base_model_name_or_path": "org/tiny", "task_type": "CAUSAL_LM"}))


def checkpoints(repo: Repository, count: int, seed: int = 0, shapes: dict | None = None) -> list[bytes]:
    rng = np.random.default_rng(seed)
    tensors = {k: bf16(s, rng) for k, s in (shapes or SHAPES).items()}
    saved = []
    for i in range(count):
        save(repo.work_tree, tensors)
        repo.commit(f"step {10 * i}")
        saved.append((repo.work_tree / "adapter_model.safetensors").read_bytes())
        tensors = step(tensors, rng)
    return saved


def stored_bytes(repo: Repository) -> int:
    return sum(p.stat().st_size for p in (repo.admin_dir / "objects").rglob("*") if p.is_file())


def depth(store: DiskObjectStore, oid: str) -> int:
    n = 0
    while True:
        container = store._stored_container(oid)
        oid = base_of(container) if container is not None else None
        if oid is None:
            return n
        n += 1


def test_gc_aggressive_stores_checkpoints_as_differences_and_checks_every_one_out(tmp_path):
    repo = Repository.init(tmp_path / "w")
    saved = checkpoints(repo, MAX_CHAIN + 4)
    raw = stored_bytes(repo)
    ids_before = set(repo.store.iter_ids())
    report = repo.gc(grace_seconds=0, aggressive=True)
    assert report.bytes_compressed > 0
    assert set(repo.store.iter_ids()) == ids_before
    blobs = [t.blob for c in repo.log() for _, t in repo.show(c.id).snapshot.tensors()]
    depths = [depth(repo.store, b) for b in blobs]
    assert max(depths) == MAX_CHAIN and depths.count(0) >= 2 * len(SHAPES)  # chains restart
    assert stored_bytes(repo) < 0.45 * raw  # (each version on its own: about 0.66)
    assert repo.fsck().ok
    for i, c in enumerate(reversed(repo.log())):
        out = tmp_path / f"o{i}"
        repo.checkout(c.id, out)
        assert (out / "adapter_model.safetensors").read_bytes() == saved[i]
    # again: nothing grows behind the plan's back, and a plain gc keeps every chain whole
    repo.gc(grace_seconds=0, aggressive=True)
    repo.gc(grace_seconds=0)
    assert max(depth(repo.store, b) for b in blobs) == MAX_CHAIN
    assert repo.fsck().ok


def test_the_plan_is_parents_first_and_bounded(tmp_path):
    repo = Repository.init(tmp_path / "w")
    checkpoints(repo, 2 * MAX_CHAIN + 3)
    plan = plan_compression(repo.store, walk(repo.store, repo.refs).objects)
    assert len(plan.dtypes) == len(SHAPES) * (2 * MAX_CHAIN + 3)
    assert max(plan.depth.values()) == MAX_CHAIN
    for blob, base in plan.bases.items():
        assert plan.depth[blob] == plan.depth[base] + 1
    assert not plan_compression(repo.store, walk(repo.store, repo.refs).objects, deltas=False).bases


def make_store(tmp_path) -> tuple[DiskObjectStore, str, str, bytes]:
    rng = np.random.default_rng(1)
    y = {"t": bf16((64, 256), rng)}
    x = step(y, rng)
    (tmp_path / "s").mkdir()
    store = DiskObjectStore(tmp_path / "s", packed=True)
    yid, xid = hash_bytes(y["t"].tobytes()), hash_bytes(x["t"].tobytes())
    store.put_known(yid, y["t"].tobytes())
    store.put_known(xid, x["t"].tobytes())
    store.flush()
    store.repack({xid, yid}, float("inf"), compress_dtypes={xid: "BF16", yid: "BF16"}, bases={xid: yid})
    assert base_of(store._stored_container(xid)) == yid
    return store, xid, yid, x["t"].tobytes()


def test_a_base_is_kept_while_a_kept_delta_needs_it(tmp_path):
    store, xid, yid, x = make_store(tmp_path)
    report = store.repack({xid}, float("inf"))  # nothing reaches the base, but the delta does
    assert yid not in report.removed and store.has(yid)
    assert store.read(xid) == x
    report = store.repack({xid}, float("inf"), bases={}, compress_dtypes={xid: "BF16"})  # on its own now,
    assert base_of(store._stored_container(xid)) is None  # so the base goes (after the delta was decoded)
    assert yid in report.removed and not store.has(yid)
    assert store.read(xid) == x
    assert not store.repack({xid}, float("inf")).removed


def test_a_packed_delta_whose_base_is_missing_is_refused_in_one_line(tmp_path):
    x = bf16((64, 256), np.random.default_rng(2)).tobytes()
    xid = hash_bytes(x)
    (tmp_path / "s").mkdir()
    store = DiskObjectStore(tmp_path / "s", packed=True)
    container = compress(x, "BF16", x, "0" * 31 + "1")  # a delta against an object nobody has
    store._ensure_writer().append(xid, [container], len(x), 1)
    store.flush()
    with pytest.raises(CorruptObjectError, match=r"its delta base 0+1 is missing") as e:
        store.read(xid)
    assert "\n" not in str(e.value)
    with pytest.raises(CorruptObjectError, match="is missing"):
        store.decompressed(xid, len(x))


@pytest.fixture
def loose_repo(tmp_path) -> Path:
    work = tmp_path / "work"
    Repository.init(work)
    loose_store(work)
    checkpoints(Repository(work), 2)
    return work


def _swap(work: Path, container_for) -> str:
    """Replace HEAD's biggest blob by the ``.z`` file ``container_for(raw bytes, id)`` returns."""
    repo = Repository(work)
    _, t = max(repo.show("HEAD").snapshot.tensors(), key=lambda nt: nt[1].size)
    p = work / ".adaptvc" / "objects" / t.blob[:2] / t.blob[2:]
    data = p.read_bytes()
    p.unlink()
    p.with_name(p.name + ".z").write_bytes(container_for(data, t.blob))
    return t.blob


@pytest.mark.parametrize("case, needle", [("missing", "is missing"), ("loop", "loops"),
                                          ("wrong size", "than the object")])
def test_hostile_deltas_reach_the_user_as_one_line(loose_repo, tmp_path, case, needle):
    def container(data: bytes, oid: str) -> bytes:
        if case == "missing":
            return compress(data, "BF16", data, "0" * 31 + "1", worthwhile=float("inf"))
        if case == "loop":
            return compress(data, "BF16", data, oid, worthwhile=float("inf"))
        config = Repository(loose_repo).show("HEAD").snapshot  # a base that exists, of another size
        other = next(f for f in config.files if f.path == "adapter_config.json")
        return compress(data, "BF16", data, other.blobs()[0], worthwhile=float("inf"))

    oid = _swap(loose_repo, container)
    assert_refused(proc(loose_repo, "checkout", "HEAD", "-o", str(tmp_path / "out")), oid[:8], needle)
    res = cli(loose_repo, "fsck")
    assert res.exit_code == 1 and oid in res.stdout and "Traceback" not in res.stderr
    ok(cli(loose_repo, "log"))


# -- hostile deltas in packs: refused in one line, never wrong bytes -----------------------------------------
def packed(tmp_path) -> DiskObjectStore:
    (tmp_path / "s").mkdir()
    return DiskObjectStore(tmp_path / "s", packed=True)


def plant(store: DiskObjectStore, objects: list[tuple[str, bytes, int, int]]) -> None:
    """One pack holding ``(id, stored bytes, raw size, encoding)`` each, whatever they are."""
    writer = store._ensure_writer()
    for oid, stored, raw_size, encoding in objects:
        writer.append(oid, [stored], raw_size, encoding)
    store.flush()


def training(count: int, n: int = 1 << 14, seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    x = {"t": bf16((n,), rng)}
    out = []
    for _ in range(count):
        out.append(x["t"].tobytes())
        x = step(x, rng)
    return out


def delta(data: bytes, base: bytes, base_id: str) -> bytes:
    return compress(data, "BF16", base, base_id, worthwhile=float("inf"))


def refused(store: DiskObjectStore, oid: str, size: int, needle: str, error=CorruptObjectError) -> str:
    """Each way of reading refuses ``oid`` (each in a new process's view: a copy found corrupt is then skipped,
    and the object is missing)."""
    def fresh() -> DiskObjectStore:
        return DiskObjectStore(store.root, packed=True)

    for read in (lambda: fresh().read(oid), lambda: fresh().decompressed(oid, size),
                 lambda: b"".join(bytes(c) for c in fresh().iter_chunks(oid))):
        with pytest.raises(error, match=needle) as e:
            read()
        assert "\n" not in str(e.value)
    return str(e.value)


def test_a_packed_loop_is_refused_by_name(tmp_path):
    v0, v1 = training(2)
    a, b = hash_bytes(v0), hash_bytes(v1)
    store = packed(tmp_path)
    plant(store, [(a, delta(v0, v1, b), len(v0), 1), (b, delta(v1, v0, a), len(v1), 1)])
    refused(store, a, len(v0), f"its delta chain loops \\({a} -> {b} -> {a}\\)")
    assert not store.check_packs()  # (the copies themselves are sound: their chain is not)


def test_a_packed_self_loop_is_refused(tmp_path):
    v0, v1 = training(2)
    a = hash_bytes(v1)
    store = packed(tmp_path)
    plant(store, [(a, delta(v1, v0, a), len(v1), 1)])
    refused(store, a, len(v1), "loops")


def test_a_packed_chain_deeper_than_the_limit_is_refused(tmp_path):
    versions = training(MAX_CHAIN + 2)
    ids = [hash_bytes(v) for v in versions]
    store = packed(tmp_path)
    plant(store, [(ids[0], versions[0], len(versions[0]), 0)] +
          [(ids[i], delta(versions[i], versions[i - 1], ids[i - 1]), len(versions[i]), 1)
           for i in range(1, len(versions))])
    assert store.read(ids[MAX_CHAIN]) == versions[MAX_CHAIN]  # as deep as allowed: read
    assert bytes(store.decompressed(ids[MAX_CHAIN], len(versions[0]))) == versions[MAX_CHAIN]
    refused(store, ids[MAX_CHAIN + 1], len(versions[0]), f"its delta chain is longer than {MAX_CHAIN}")


def test_a_packed_base_of_another_size_is_refused(tmp_path):
    v0, v1 = training(2)
    short = v0[:-64]
    store = packed(tmp_path)
    xid = hash_bytes(v1)
    plant(store, [(hash_bytes(short), short, len(short), 0), (xid, delta(v1, v0, hash_bytes(short)), len(v1), 1)])
    refused(store, xid, len(v1), "is shorter than the object")


def test_a_packed_base_whose_bytes_are_damaged_is_refused(tmp_path):
    v0, v1 = training(2)
    damaged = bytearray(v0)
    damaged[100] ^= 0x40
    store = packed(tmp_path)
    xid, yid = hash_bytes(v1), hash_bytes(v0)
    plant(store, [(yid, bytes(damaged), len(v0), 0), (xid, delta(v1, v0, yid), len(v1), 1)])
    refused(store, xid, len(v1), f"the delta base of {xid}", ChecksumMismatchError)


def test_a_truncated_packed_delta_is_refused(tmp_path):
    v0, v1 = training(2)
    store = packed(tmp_path)
    xid, yid = hash_bytes(v1), hash_bytes(v0)
    plant(store, [(yid, v0, len(v0), 0), (xid, delta(v1, v0, yid)[:-10], len(v1), 1)])
    refused(store, xid, len(v1), "damaged")


@pytest.mark.parametrize("position", [3, 5, 13, 20, 40, 60, 200, 1000, -3])
def test_a_flipped_byte_in_a_packed_delta_never_gives_wrong_bytes(tmp_path, position):
    v0, v1 = training(2)
    store = packed(tmp_path)
    xid, yid = hash_bytes(v1), hash_bytes(v0)
    container = bytearray(delta(v1, v0, yid))
    container[position] ^= 0x10
    plant(store, [(yid, v0, len(v0), 0), (xid, bytes(container), len(v1), 1)])
    for read in (lambda: store.read(xid), lambda: b"".join(bytes(c) for c in store.iter_chunks(xid))):
        try:
            assert read() == v1
        except (CorruptObjectError, ChecksumMismatchError, ObjectNotFoundError) as e:  # (then: marked corrupt)
            assert "\n" not in str(e)


PACKED_CASES = {
    "loop": lambda data, oid, other: compress(data, "BF16", data, oid, worthwhile=float("inf")),
    "missing": lambda data, oid, other: compress(data, "BF16", data, "0" * 31 + "1", worthwhile=float("inf")),
    "wrong size": lambda data, oid, other: compress(data, "BF16", data, other, worthwhile=float("inf")),
    "truncated": lambda data, oid, other: compress(data, "BF16", worthwhile=float("inf"))[:-7],
}


@pytest.mark.parametrize("case, needle", [("loop", "loops"), ("missing", "is missing"),
                                          ("wrong size", "than the object"), ("truncated", "damaged")])
def test_hostile_packed_deltas_reach_the_user_as_one_line(loose_repo, tmp_path, case, needle):
    """HEAD's biggest blob, only in a pack, as a hostile container: checkout and fsck say so in one line."""
    repo = Repository(loose_repo)
    _, t = max(repo.show("HEAD").snapshot.tensors(), key=lambda nt: nt[1].size)
    config = next(f for f in repo.show("HEAD").snapshot.files if f.path == "adapter_config.json")
    p = loose_repo / ".adaptvc" / "objects" / t.blob[:2] / t.blob[2:]
    data = p.read_bytes()
    store = DiskObjectStore(loose_repo / ".adaptvc", packed=True)
    plant(store, [(t.blob, PACKED_CASES[case](data, t.blob, config.blobs()[0]), len(data), 1)])
    p.unlink()
    assert_refused(proc(loose_repo, "checkout", "HEAD", "-o", str(tmp_path / "out")), t.blob[:8], needle)
    res = cli(loose_repo, "fsck")
    assert res.exit_code == 1 and t.blob in res.stdout and "Traceback" not in res.stderr
    ok(cli(loose_repo, "log"))


# -- gc keeps deltas decodable -------------------------------------------------------------------------------
def test_plain_gc_and_repack_keep_every_chain_whole(tmp_path):
    """After --aggressive, new commits and unreachable garbage: a plain gc copies deltas as stored and keeps
    their bases; a second --aggressive re-plans; every version still checks out byte for byte."""
    repo = Repository.init(tmp_path / "w")
    saved = checkpoints(repo, MAX_CHAIN + 2)
    repo.gc(grace_seconds=0, aggressive=True)
    rng = np.random.default_rng(7)
    for _ in range(3):
        repo.store.put_bytes(rng.bytes(50_000))
    repo.store.flush()
    saved += checkpoints(repo, 2, seed=1)
    before = len(repo.store.packs())
    report = repo.gc(grace_seconds=0)
    assert len(report.removed) == 3 and len(repo.store.packs()) == 1 < before
    assert repo.fsck().ok
    ids = [c.id for c in reversed(repo.log())]
    for i, c in enumerate(ids):
        out = tmp_path / f"a{i}"
        repo.checkout(c, out)
        assert (out / "adapter_model.safetensors").read_bytes() == saved[i]
    repo.gc(grace_seconds=0, aggressive=True)
    blobs = [t.blob for c in repo.log() for _, t in repo.show(c.id).snapshot.tensors()]
    assert max(depth(repo.store, b) for b in blobs) <= MAX_CHAIN
    for i, c in enumerate(ids):
        out = tmp_path / f"b{i}"
        repo.checkout(c, out)
        assert (out / "adapter_model.safetensors").read_bytes() == saved[i]


def test_a_dry_run_of_gc_aggressive_changes_nothing(tmp_path):
    repo = Repository.init(tmp_path / "w")
    checkpoints(repo, 3)
    files = sorted((p.name, p.stat().st_size) for p in (repo.admin_dir / "objects").rglob("*") if p.is_file())
    report = repo.gc(grace_seconds=0, aggressive=True, dry_run=True)
    assert report.dry_run and not report.removed
    assert sorted((p.name, p.stat().st_size) for p in (repo.admin_dir / "objects").rglob("*")
                  if p.is_file()) == files


# -- remotes carry decoded objects ---------------------------------------------------------------------------
@pytest.fixture(params=["directory", "s3"])
def remote(request, tmp_path, monkeypatch):
    if request.param == "directory":
        yield str(tmp_path / "remote-store")
        return
    from tests.objservers import object_remote

    with object_remote(request.getfixturevalue("s3_service"), monkeypatch) as r:
        yield r.url


def test_push_after_gc_aggressive_sends_objects_that_stand_alone(tmp_path, remote):
    repo = Repository.init(tmp_path / "w")
    saved = checkpoints(repo, MAX_CHAIN + 1)
    for i, c in enumerate(reversed(repo.log())):
        repo.tag(f"v{i}", c.id)
    repo.gc(grace_seconds=0, aggressive=True)
    assert any(depth(repo.store, t.blob) for _, t in repo.show("HEAD").snapshot.tensors())
    repo.add_remote("origin", remote)
    repo.push(tags=True)
    if not remote.startswith(("s3:", "az:", "hf:")):  # a folder remote holds plain objects only
        remote_store = DiskObjectStore(Path(remote), packed=True)
        assert all(not remote_store.is_compressed(oid) for oid in remote_store.iter_ids())
    clone = Repository.clone(remote, tmp_path / "clone")
    assert clone.fsck().ok
    for i in range(len(saved)):
        out = tmp_path / f"c{i}"
        clone.checkout(f"v{i}", out)
        assert (out / "adapter_model.safetensors").read_bytes() == saved[i]


# -- a SIGKILL during gc --aggressive (and the plain gc after it) loses nothing -------------------------------
@pytest.mark.slow
def test_sigkill_during_gc_aggressive_with_deltas_loses_nothing(tmp_path):
    from tests.test_packs import kill_after

    work = tmp_path / "work"
    repo = Repository.init(work)
    big = {k: (s[0] * 8, s[1] * 8) for k, s in SHAPES.items()}  # 2 MB a version
    saved = checkpoints(repo, 2 * MAX_CHAIN, shapes=big)
    ids = [c.id for c in reversed(repo.log())]
    noise = np.random.default_rng(5)
    for _ in range(5):  # unreachable garbage for gc to drop
        repo.store.put_bytes(noise.bytes(200_000))
    repo.store.flush()

    def every_version_checks_out(k: int) -> None:
        again = Repository(work)
        report = again.fsck()
        assert report.ok, [(p.oid, p.kind, p.problem) for p in report.problems]
        for i, c in enumerate(ids):
            out = tmp_path / f"k{k}-{i}"
            again.checkout(c, out)
            assert (out / "adapter_model.safetensors").read_bytes() == saved[i], (k, i)

    # how long a whole gc --aggressive takes here and now (a copy of the store): the kills land inside that span
    shutil.copytree(work, tmp_path / "calibrate", symlinks=True)
    started = time.perf_counter()
    ok(cli(tmp_path / "calibrate", "gc", "--grace", "0", "--aggressive"))
    span = time.perf_counter() - started
    rng = random.Random(13)
    packs = work / ".adaptvc" / "objects" / "pack"
    for args in (["gc", "--grace", "0", "--aggressive"], ["gc", "--grace", "0"]):
        if "--aggressive" not in args:  # deltas now; new raw packs and garbage for a plain gc to consolidate
            again = Repository(work)
            saved += checkpoints(again, 2, seed=1, shapes=big)
            ids = [c.id for c in reversed(again.log())]
            again.store.put_bytes(noise.bytes(200_000))
            again.store.flush()
        unfinished = 0
        for k in range(4):
            kill_after(["-C", str(work), *args], rng.uniform(0.2 * span, 0.9 * span))
            unfinished += len(list(packs.glob("*.idx"))) > 1
            every_version_checks_out(k)
        assert unfinished >= 1  # at least one kill landed inside the gc, not after it
        ok(cli(work, *args))
        every_version_checks_out(99)
        after = Repository(work)  # the deltas are there (and stay through the plain gc)
        assert any(depth(after.store, t.blob) for _, t in after.show(ids[1]).snapshot.tensors())
    assert len(list((work / ".adaptvc" / "objects" / "pack").glob("*.idx"))) == 1


def test_fsck_decodes_every_delta_and_names_a_damaged_one(tmp_path):
    from tests.light import corrupt_stored

    repo = Repository.init(tmp_path / "w")
    checkpoints(repo, 3)
    repo.gc(grace_seconds=0, aggressive=True)
    assert repo.fsck().ok
    blob = next(t.blob for _, t in repo.show("HEAD").snapshot.tensors() if depth(repo.store, t.blob))
    corrupt_stored(repo.store, blob, position=-20)  # inside the last group of a delta
    again = Repository(repo.work_tree)
    report = again.fsck()
    assert not report.ok and any(p.oid == blob for p in report.problems)
    assert_refused(proc(repo.work_tree, "checkout", "HEAD", "-o", str(tmp_path / "out")), blob[:8])


def test_a_writer_reusing_a_delta_while_gc_retires_packs_keeps_its_base(tmp_path, monkeypatch):
    """gc has decided that a delta and its base (in two old packs) are garbage; before it retires the packs a
    writer reuses the delta. The delta's pack stays (it was freshened): its base's pack must stay too, or the
    reused version could never be read again."""
    import os

    from adaptvc.storage.pack import COMPRESSED, RAW

    v0, v1 = training(2)
    base, kept = hash_bytes(v0), hash_bytes(v1)
    store = packed(tmp_path)
    plant(store, [(base, v0, len(v0), RAW)])
    plant(store, [(kept, delta(v1, v0, base), len(v1), COMPRESSED)])
    old = time.time() - 7200
    for pack in (tmp_path / "s" / "objects" / "pack").iterdir():
        os.utime(pack, (old, old))
    real = DiskObjectStore._retire_pack
    reused: list[bool] = []

    def retire_after_a_writer_reused_the_delta(self, index, cutoff):
        if not reused:
            reused.append(DiskObjectStore(tmp_path / "s", packed=True).freshen(kept))
        return real(self, index, cutoff)

    monkeypatch.setattr(DiskObjectStore, "_retire_pack", retire_after_a_writer_reused_the_delta)
    report = DiskObjectStore(tmp_path / "s", packed=True).repack(set(), time.time() - 3600)
    assert reused == [True] and kept in report.removed  # gc had planned to drop both
    assert DiskObjectStore(tmp_path / "s", packed=True).read(kept) == v1
