"""The trust boundary, part 2: a damaged or booby-trapped store, and races that must not lose anything.

Every writer creates files with O_EXCL | O_NOFOLLOW (checked by watching every open), a damaged store keeps
working where it can and says where it can't, gc cannot race a commit, and checkouts leave no debris.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adaptvc import Repository
from tests.light import (
    CLI,
    ENV,
    assert_refused,
    big_adapter,
    cli,
    digest,
    loose_store,
    nested_json,
    ok,
    peak_rss,
    proc,
    write_adapter,
    zstd_bomb,
)


@pytest.fixture
def committed(tmp_path) -> Path:
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "v1"))
    ok(cli(work, "tag", "v1"))
    write_adapter(work, seed=2)
    ok(cli(work, "commit", "-m", "v2"))
    return work


def admin(work: Path) -> Path:
    return work / ".adaptvc"


# -- every file is created without following links --------------------------------------------------------
class OpenWatch:
    """Records every open of a file for writing (os.open and io.open) made by adaptvc's code below ``roots``
    (the test's own writes, through pathlib or numpy, are not adaptvc's and are not judged)."""

    def __init__(self, monkeypatch, roots: list[Path]) -> None:
        self.roots = [str(r.resolve()) for r in roots]
        self.bad: list[str] = []
        real_os_open, real_io_open = os.open, io.open

        def by_adaptvc() -> bool:
            frame = sys._getframe(2)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if module.startswith(("adaptvc", "tests")):
                    return module.startswith("adaptvc")
                frame = frame.f_back
            return False

        def inside(path, dir_fd) -> bool:
            if dir_fd is not None:
                return True  # relative to a folder opened by the writer: judged by the flags alone
            p = os.path.abspath(os.fsdecode(path))
            return any(p == r or p.startswith(r + os.sep) for r in self.roots)

        def watched_os_open(path, flags, mode=0o777, *, dir_fd=None):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path, dir_fd) and by_adaptvc():
                creates_safely = (flags & os.O_CREAT and flags & os.O_EXCL) or (flags & os.O_APPEND)
                if not flags & os.O_NOFOLLOW or (flags & os.O_CREAT and not creates_safely):
                    self.bad.append(f"os.open({path!r}, {flags:#o})")
            return real_os_open(path, flags, mode, dir_fd=dir_fd)

        def watched_io_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and \
                    inside(file, None) and by_adaptvc():
                self.bad.append(f"open({file!r}, {mode!r})")
            return real_io_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", watched_os_open)
        monkeypatch.setattr(io, "open", watched_io_open)
        monkeypatch.setattr(builtins, "open", watched_io_open)


def test_every_file_adaptvc_creates_is_created_without_following_links(tmp_path, monkeypatch):
    import subprocess as sp

    work = write_adapter(tmp_path / "work", seed=1)
    write_adapter(work / "second", seed=5)
    sp.run(["git", "init", "-q", str(tmp_path)], check=True)
    watch = OpenWatch(monkeypatch, [tmp_path])
    repo = Repository.init(work)
    repo.commit("v1")
    repo.tag("v1")
    write_adapter(work, seed=2)
    repo.status()
    repo.commit("v2")
    repo.branch("exp", "v1")
    repo.switch("exp")
    repo.switch("main")
    repo.checkout("v1", tmp_path / "serve")
    repo.checkout("main", tmp_path / "serve", force=True)
    repo.add_remote("origin", str(tmp_path / "remote"))
    repo.push(tags=True)
    clone = Repository.clone(str(tmp_path / "remote"), tmp_path / "clone")
    write_adapter(work, seed=3)
    repo.commit("v3")
    repo.push()
    clone.pull()
    repo.gc(grace_seconds=0, aggressive=True)
    ok(cli(work, "pin", "v1"))
    assert watch.bad == []


def _planted_names(folder: Path, name: str, pids: range) -> list[Path]:
    return [folder / f".{name}.{pid}.tmp" for pid in pids]


def test_predictable_temporary_names_cannot_redirect_a_ref_write(committed, tmp_path, monkeypatch):
    """Another user of a shared store plants links where the next writer's temporary file will be."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    heads = admin(committed) / "refs" / "heads"
    for p in [*_planted_names(heads, "main", range(4242, 4243)),
              *_planted_names(admin(committed), "index.json", range(4242, 4243))]:
        p.symlink_to(victim)
    repo = Repository(committed)
    write_adapter(committed, seed=7)
    repo.commit("v3")
    repo.status()
    assert victim.read_text() == "precious\n"
    assert len(repo.log()) == 3


def test_a_symlinked_object_folder_is_never_written_through(committed, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    objects = admin(committed) / "objects"
    for i in range(256):
        d = objects / f"{i:02x}"
        if d.exists():
            shutil.rmtree(d)
        d.symlink_to(outside, target_is_directory=True)
    write_adapter(committed, seed=8)
    res = cli(committed, "commit", "-m", "v3")
    assert_refused(res, "symbolic link")
    assert list(outside.iterdir()) == []


# -- a damaged store still works where it can ----------------------------------------------------------
def test_a_torn_reflog_line_inside_a_utf8_character_is_skipped(committed):
    log = admin(committed) / "logs" / "refs" / "heads" / "main"
    with open(log, "ab") as f:
        f.write('{"message": "café'.encode()[:-1])
    ok(cli(committed, "reflog", "main"))
    ok(cli(committed, "fsck"))
    ok(cli(committed, "gc", "--grace", "0"))


def test_a_deeply_nested_reflog_line_is_skipped(committed):
    log = admin(committed) / "logs" / "HEAD"
    with open(log, "a") as f:
        f.write(nested_json(100_000) + "\n")
    ok(proc(committed, "reflog"))
    ok(proc(committed, "fsck"))
    ok(proc(committed, "gc", "--grace", "0"))


def test_leftover_temporary_folders_do_not_stop_gc_and_are_removed(committed):
    leftover = admin(committed) / "tmp" / "push-abc123"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "adapter_model.safetensors").write_bytes(b"x" * 100)
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    res = ok(cli(committed, "gc", "--json"))
    assert json.loads(res.stdout)["temp_files_removed"] >= 1
    assert not leftover.exists()


@pytest.mark.parametrize("kind", ["garbage", "symlink", "directory-symlink"])
def test_one_bad_ref_does_not_stop_log_branch_or_gc_and_fsck_names_it(committed, tmp_path, kind):
    heads = admin(committed) / "refs" / "heads"
    if kind == "garbage":
        (heads / "broken").write_bytes(b"\x00\xffnot an id\n")
    elif kind == "symlink":
        secret = tmp_path / "secret"
        secret.write_text("0" * 32 + "\n")
        (heads / "broken").symlink_to(secret)
    else:
        (heads / "broken").symlink_to(tmp_path, target_is_directory=True)
    assert len(json.loads(ok(cli(committed, "log", "--json")).stdout)) == 2
    assert "main" in ok(cli(committed, "branch")).stdout
    ok(cli(committed, "gc", "--grace", "0"))
    res = cli(committed, "fsck")
    assert res.exit_code == 1 and "refs/heads/broken" in res.stdout + res.stderr


@pytest.mark.parametrize("head", [None, "ref: ../../outside\n", "ref: refs/heads/../../../etc\n", "garbage\n"])
def test_fsck_checks_head(committed, head):
    path = admin(committed) / "HEAD"
    if head is None:
        path.unlink()
    else:
        path.write_text(head)
    res = cli(committed, "fsck")
    assert res.exit_code == 1 and "HEAD" in res.stdout + res.stderr


_ENTRY = '{"stat": [1, 2, 3, 4], "recorded_ns": 5, "entry": {"path": "adapter_config.json", "size": 1, "hash": "%s"}}'


@pytest.mark.parametrize("content", [
    "[]", '{"version": 1, "entries": []}', '{"version": 1, "root": 5}', "\x00\x01",
    # the right root, so the entries are read: each of the wrong shape
    '{"version": 1, "root": ROOT, "entries": {"adapter_config.json": 3}}',
    '{"version": 1, "root": ROOT, "entries": {"adapter_config.json": [1, 2]}}',
    '{"version": 1, "root": ROOT, "entries": {"adapter_config.json": {"size": "x"}}}',
    '{"version": 1, "root": ROOT, "entries": {"adapter_config.json": {"stat": "x", "entry": 3}}}',
    '{"version": 1, "root": ROOT, "entries": {"../outside": ' + _ENTRY % ("0" * 32) + '}}',
    '{"version": 1, "root": ROOT, "entries": {"adapter_config.json": ' + _ENTRY % "not-a-hash" + '}}',
], ids=["list", "entries-list", "root-int", "binary", "entry-int", "entry-list", "size-str", "stat-str",
        "path-outside", "bad-hash"])
def test_a_stat_cache_of_the_wrong_shape_is_ignored(committed, content):
    import json as _json

    root = str(committed.resolve())
    (admin(committed) / "index.json").write_text(content.replace("ROOT", _json.dumps(root)))
    assert "nothing to commit" in ok(cli(committed, "status")).stdout


def _compressed_object_declaring(raw_size: int, payload: bytes) -> bytes:
    """A compressed-object container (format 1) that claims ``raw_size`` bytes."""
    import zstandard

    packed = zstandard.ZstdCompressor().compress(payload)
    return b"AVZ1" + struct.pack("<BQ", 1, raw_size) + struct.pack("<B", 1) + struct.pack("<BQ", 1, len(packed)) + \
        packed


def _replace_with_compressed(work: Path, container: bytes) -> str:
    """Swap the biggest blob of HEAD for ``container`` (as its .z form); returns its id."""
    repo = Repository(work)
    version = repo.show("HEAD")
    _, t = max(version.snapshot.tensors(), key=lambda nt: nt[1].size)
    p = admin(work) / "objects" / t.blob[:2] / t.blob[2:]
    p.unlink()
    p.with_name(p.name + ".z").write_bytes(container)
    return t.blob


@pytest.fixture
def committed_loose(tmp_path) -> Path:
    """Like ``committed``, in a store of format 1 (one file per object: a compressed one is a ``.z`` file)."""
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work)
    loose_store(work)
    ok(cli(work, "commit", "-m", "v1"))
    write_adapter(work, seed=2)
    ok(cli(work, "commit", "-m", "v2"))
    return work


def test_a_compressed_object_declaring_2_to_the_62_bytes_is_reported_not_allocated(committed_loose, tmp_path):
    committed = committed_loose
    oid = _replace_with_compressed(committed, _compressed_object_declaring(1 << 62, b"\x00" * 64))
    res = proc(committed, "fsck")
    err = res.stderr.decode()
    assert res.returncode == 1 and "Traceback" not in err and "MemoryError" not in err
    assert oid in res.stdout.decode()
    assert_refused(proc(committed, "checkout", "HEAD", "-o", str(tmp_path / "out")))


def test_a_decompression_bomb_is_stopped_while_streaming(committed_loose, tmp_path):
    """45 KB that inflate to 1.5 GB, under a header claiming 1 KB: memory stays bounded."""
    committed = committed_loose

    packed = zstd_bomb(1500)
    container = b"AVZ1" + struct.pack("<BQ", 1, 1024) + struct.pack("<B", 1) + struct.pack("<BQ", 1, len(packed)) \
        + packed
    _replace_with_compressed(committed, container)
    for args in (["fsck"], ["checkout", "HEAD", "-o", str(tmp_path / "o")]):
        peak, code, err = peak_rss(committed, *args)
        assert "Traceback" not in err and code == 1, err
        assert peak < 150, peak


# -- the truth about what happened ---------------------------------------------------------------------
def test_a_reflog_that_cannot_be_written_does_not_hide_a_commit_that_landed(committed):
    log = admin(committed) / "logs" / "refs" / "heads" / "main"
    log.unlink()
    log.mkdir()
    write_adapter(committed, seed=11)
    res = cli(committed, "commit", "-m", "v3")
    assert res.exit_code == 0, res.stderr
    assert "reflog" in res.stderr and "unchanged" not in res.stderr
    assert json.loads(ok(cli(committed, "log", "--json")).stdout)[0]["message"] == "v3"


# -- races and debris ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gc_with_no_grace_cannot_delete_a_commit_in_progress(tmp_path):
    """gc --grace 0 in a loop while 20 commits land: all 20 reachable, fsck clean."""
    work = tmp_path / "work"
    Repository.init(work)
    sources = [big_adapter(tmp_path / "src" / f"s{i}", seed=i, mbytes=6) for i in range(20)]
    stop = threading.Event()
    errors: list[str] = []

    def gc_loop() -> None:
        repo = Repository(work)
        while not stop.is_set():
            try:
                repo.gc(grace_seconds=0)
            except Exception as e:  # recorded: a broken history makes gc refuse
                errors.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        for i, src in enumerate(sources):
            res = subprocess.run([*CLI, "-C", str(work), "commit", "-q", "-m", f"c{i}", "--from", str(src)],
                                 env=ENV, capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert len(Repository(work).log()) == 20
    ok(cli(work, "fsck"))


@pytest.mark.slow
def test_killed_checkouts_leave_no_debris_after_the_next_checkout(tmp_path):
    work = big_adapter(tmp_path / "work", seed=1, mbytes=48)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "big"))
    out = tmp_path / "serve"
    out.mkdir()
    final = {"adapter_model.safetensors", "adapter_config.json"}
    killed_mid_write = 0
    for _ in range(5):
        before = set(os.listdir(out))
        p = subprocess.Popen([*CLI, "-C", str(work), "checkout", "-q", "HEAD", "-o", str(out), "-f"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while p.poll() is None and time.monotonic() < deadline:
            if set(os.listdir(out)) - before - final:  # a temporary file appeared: kill while it is written
                p.send_signal(signal.SIGKILL)
                killed_mid_write += 1
                break
        p.wait()
    assert killed_mid_write >= 3
    ok(cli(work, "checkout", "-q", "HEAD", "-o", str(out), "-f"))
    names = {n for n in os.listdir(out) if not n.startswith(".adaptvc-checkout")}
    assert names == final, names


def test_a_second_checkout_into_a_folder_being_written_waits_or_is_refused(tmp_path, monkeypatch):
    """Checkout A is paused between its renames; checkout B into the same folder must not interleave."""
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("a")
    write_adapter(work, seed=2, config={"lora_alpha": 99})
    repo.commit("b")
    expected = {}
    for rev in ("HEAD", "HEAD~1"):
        repo.checkout(rev, tmp_path / f"ref-{rev}")
        expected[rev] = digest(tmp_path / f"ref-{rev}")
    out = tmp_path / "serve"
    from adaptvc.ops import materialise

    monkeypatch.setattr(materialise, "LOCK_TIMEOUT", 0.5)
    paused, release = threading.Event(), threading.Event()
    real_replace, real_rename = os.replace, os.rename

    def pausing(real):
        def move(*args, **kwargs):
            real(*args, **kwargs)
            if threading.current_thread().name == "A" and not paused.is_set():
                paused.set()
                release.wait(60)
        return move

    monkeypatch.setattr(os, "replace", pausing(real_replace))
    monkeypatch.setattr(os, "rename", pausing(real_rename))
    errors = []
    a = threading.Thread(target=lambda: repo.checkout("HEAD~1", out), name="A")
    a.start()
    assert paused.wait(30)
    try:
        Repository(work).checkout("HEAD", out, force=True)
    except Exception as e:  # refused while A holds the folder: the expected outcome
        errors.append(e)
    release.set()
    a.join()
    got = {k: v for k, v in digest(out).items() if not k.startswith(".adaptvc-checkout")}
    assert got in (expected["HEAD"], expected["HEAD~1"]), "a folder mixes two versions"


@pytest.mark.slow
def test_two_checkouts_into_one_folder_never_mix_versions(tmp_path):
    work = big_adapter(tmp_path / "work", seed=1, mbytes=24)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "a"))
    big_adapter(work, seed=2, mbytes=24)
    cfg = json.loads((work / "adapter_config.json").read_text())
    (work / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": 99}))
    ok(cli(work, "commit", "-m", "b"))
    expected = {}
    for rev in ("HEAD", "HEAD~1"):
        ok(cli(work, "checkout", rev, "-o", str(tmp_path / f"ref-{rev}")))
        expected[rev] = digest(tmp_path / f"ref-{rev}")
    for k in range(4):
        out = tmp_path / f"serve{k}"
        procs = [subprocess.Popen([*CLI, "-C", str(work), "checkout", "-q", rev, "-o", str(out), "-f"], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rev in ("HEAD", "HEAD~1")]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0 or (err.startswith("Error: ") and len(err.strip().splitlines()) == 1), err
        got = {k2: v for k2, v in digest(out).items() if not k2.startswith(".adaptvc-checkout")}
        assert got in (expected["HEAD"], expected["HEAD~1"]), "a folder mixes two versions"


def test_checkout_f_removes_exactly_the_files_of_the_version_it_replaces(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "one adapter"))
    write_adapter(work / "second", seed=2)
    ok(cli(work, "commit", "-m", "two adapters"))
    out = tmp_path / "serve"
    ok(cli(work, "checkout", "HEAD", "-o", str(out)))
    (out / "notes.txt").write_text("the operator's notes")
    (out / "second" / "mine.txt").write_text("also not adaptvc's")
    ok(cli(work, "checkout", "HEAD~1", "-o", str(out), "-f"))
    assert not (out / "second" / "adapter_model.safetensors").exists()
    assert not (out / "second" / "adapter_config.json").exists()
    assert (out / "notes.txt").read_text() == "the operator's notes"
    assert (out / "second" / "mine.txt").exists()
    # and a foreign file of the same name as an adapter file is never overwritten, even with -f
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text("{}")
    assert_refused(cli(work, "checkout", "HEAD", "-o", str(foreign), "-f"), "adapter_config.json")
    assert (foreign / "adapter_config.json").read_text() == "{}"


def test_a_clone_that_failed_half_way_can_be_cloned_again(tmp_path):
    work = big_adapter(tmp_path / "work", seed=1, mbytes=2)
    repo = Repository.init(work)
    repo.commit("v1")
    repo.add_remote("origin", str(tmp_path / "remote"))
    repo.push()
    target = tmp_path / "clone"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    res = subprocess.run([*CLI, "clone", str(tmp_path / "remote"), str(target)], env=ENV, capture_output=True,
                         text=True, timeout=60, preexec_fn=limit)
    assert_refused(res)
    assert not target.exists() or list(target.iterdir()) == []
    ok(proc(None, "clone", str(tmp_path / "remote"), str(target)))
    assert len(Repository(target).log()) == 1
