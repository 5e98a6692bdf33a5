"""Nothing lost, nobody fooled: concurrent writers, SIGKILL at random points, full disks, corruption, gc.

The default run is bounded for CI; `pytest -m soak` runs the long variants (see docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from adaptvc import Repository
from adaptvc.errors import RefLockedError
from tests import helpers
from tests.light import age_of, corrupt_stored, loose_store, set_age

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "adaptvc"]


def write_adapter(folder: Path, seed: int, tensors: int = 8, size: int = 1024) -> Path:
    """A PEFT-layout adapter of ``tensors`` float32 tensors of ``size`` × 64 values each."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(tensors // 2):
        prefix = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        data[f"{prefix}.lora_A.weight"] = rng.standard_normal((64, size), dtype=np.float32)
        data[f"{prefix}.lora_B.weight"] = rng.standard_normal((size, 64), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(data, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64, "lora_alpha": 16}))
    return folder


def run_cli(work: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "-C", str(work), *args], env=ENV, capture_output=True, text=True, timeout=120,
                          **kw)


# -- concurrency -------------------------------------------------------------------------------------------
WORKER = r"""
import json, subprocess, sys
work, me, n, exe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = []
for i in range(n):
    r = subprocess.run([exe, "-m", "adaptvc", "-C", work, "commit", "-q", "--json", "-m", f"p{me} c{i}",
                        "--from", f"{work}/../src/p{me}c{i}"], capture_output=True, text=True)
    out.append({"code": r.returncode, "id": json.loads(r.stdout)["id"] if r.returncode == 0 else None,
                "err": r.stderr.strip()})
print(json.dumps(out))
"""


def concurrent_commits(tmp_path: Path, processes: int, commits: int) -> dict:
    work = tmp_path / "work"
    Repository.init(work)
    for p in range(processes):
        for i in range(commits):
            write_adapter(tmp_path / "src" / f"p{p}c{i}", seed=p * 1000 + i, tensors=2, size=256)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(work), str(p), str(commits), sys.executable],
                              env=ENV, stdout=subprocess.PIPE, text=True) for p in range(processes)]
    results = [r for p in procs for r in json.loads(p.communicate(timeout=600)[0])]
    landed = [r["id"] for r in results if r["code"] == 0]
    refused = [r["err"] for r in results if r["code"] != 0]
    repo = Repository(work)
    history = [c.id for c in repo.log()]
    assert len(results) == processes * commits
    assert sorted(history) == sorted(landed), "a commit that reported success is missing from the branch"
    for err in refused:
        assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
        assert "ref moved" in err or "locked" in err, err
    assert repo.fsck().ok
    for c in repo.log():  # a straight line: every commit's parent is the one before it
        assert len(c.parents) <= 1
    return {"landed": len(landed), "refused": len(refused)}


def test_concurrent_commits_are_never_lost(tmp_path):
    stats = concurrent_commits(tmp_path, processes=16, commits=5)
    assert stats["landed"] >= 5


@pytest.mark.soak
def test_concurrent_commits_soak(tmp_path):
    concurrent_commits(tmp_path, processes=32, commits=20)


def test_stale_lock_is_detected_and_cleared(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = repo.admin_dir / "refs" / "heads" / "main.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "time": time.time()}))
    repo.refs.lock_timeout = 0.1
    write_adapter(work, seed=2)
    with pytest.raises(RefLockedError) as e:
        repo.commit("v2")
    assert e.value.stale and "no longer running" in str(e.value) and "adaptvc unlock" in str(e.value)
    assert [info.path for info in repo.fsck().stale_locks] == [lock]
    res = run_cli(work, "unlock")
    assert res.returncode == 0 and f"removed {lock}" in res.stdout
    assert repo.commit("v2").parents == (repo.resolve("HEAD~1"),)

    # a live process's lock is kept unless --force
    lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}))
    res = run_cli(work, "unlock")
    assert "still running" in res.stdout and lock.exists()
    assert run_cli(work, "unlock", "--force").returncode == 0 and not lock.exists()


# -- crashes -----------------------------------------------------------------------------------------------
def kill_at_random(cmd: list[str], delay: float) -> int:
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    return p.wait()


def sigkill_commits(tmp_path: Path, kills: int) -> dict:
    work = tmp_path / "work"
    repo = Repository.init(work)
    versions = [write_adapter(tmp_path / f"v{i}", seed=i, tensors=48, size=1024) for i in range(4)]  # 25 MB
    repo.commit("base", source=versions[0])
    rng = random.Random(1234)
    stats = {"kills": 0, "landed": 0, "old_state": 0, "stale_locks": 0}
    for k in range(kills):
        before = repo.head()
        src = versions[1 + k % 3]
        kill_at_random([*CLI, "-C", str(work), "commit", "-q", "--allow-empty", "-m", f"k{k}", "--from", str(src)],
                       rng.uniform(0.02, 0.4))
        stats["kills"] += 1
        stats["stale_locks"] += len(repo.refs.clear_stale_locks())
        report = repo.fsck()
        assert report.ok, report.to_dict()
        after = repo.head()
        if after == before:
            stats["old_state"] += 1
        else:  # the new state: exactly one commit on top of the old one, complete
            c = repo.read_commit(after)
            assert c.parents == (before,) and c.message == f"k{k}"
            stats["landed"] += 1
    out = tmp_path / "check"
    repo.checkout("HEAD", out)  # whatever landed checks out byte for byte
    assert helpers.sha256(out / "adapter_model.safetensors") in {
        helpers.sha256(v / "adapter_model.safetensors") for v in versions}
    return stats


def test_sigkill_during_commit_leaves_old_or_new_state(tmp_path):
    stats = sigkill_commits(tmp_path, kills=50)
    assert stats["kills"] == 50 and stats["old_state"] + stats["landed"] == 50


@pytest.mark.soak
def test_sigkill_during_commit_soak(tmp_path):
    sigkill_commits(tmp_path, kills=500)


def test_sigkill_during_checkout_never_leaves_a_partial_file(tmp_path):
    work = tmp_path / "work"
    repo = Repository.init(work)
    v1 = write_adapter(tmp_path / "v1", seed=1, tensors=64, size=1024)
    v2 = write_adapter(tmp_path / "v2", seed=2, tensors=64, size=1024)
    repo.commit("v1", source=v1)
    repo.commit("v2", source=v2)
    good = {helpers.sha256(v / "adapter_model.safetensors") for v in (v1, v2)}
    out = tmp_path / "serve"
    rng = random.Random(7)
    for k in range(20):
        kill_at_random([*CLI, "-C", str(work), "checkout", "-q", "-f", f"HEAD~{k % 2}", "-o", str(out)],
                       rng.uniform(0.02, 0.35))
        final = out / "adapter_model.safetensors"
        if final.exists():
            assert helpers.sha256(final) in good
    assert repo.fsck().ok


def test_sigkill_during_gc_loses_nothing_reachable(tmp_path):
    work = tmp_path / "work"
    repo = Repository.init(work)
    for i in range(3):
        repo.commit(f"v{i}", source=write_adapter(tmp_path / f"v{i}", seed=i, tensors=32))
    repo.branch("doomed", "HEAD~1")
    repo.delete_branch("doomed")  # its commit stays reachable through the reflog
    for _ in range(20):  # unreachable garbage for gc to chew on
        repo.store.put_bytes(os.urandom(200_000))
    rng = random.Random(3)
    for _ in range(10):
        kill_at_random([*CLI, "-C", str(work), "gc", "--grace", "0"], rng.uniform(0.05, 0.3))
        assert repo.fsck().ok
    assert [c.message for c in repo.log()] == ["v2", "v1", "v0"]


# -- full disks --------------------------------------------------------------------------------------------
def test_commit_with_writes_failing_is_refused_cleanly(tmp_path):
    work = tmp_path / "work"
    repo = Repository.init(work)
    repo.commit("v1", source=write_adapter(tmp_path / "v1", seed=1))
    ids_before = set(repo.store.iter_ids())
    refs_before = {k: v for k, v in helpers.files_digest(repo.admin_dir).items()
                   if not k.startswith(("objects", "commit-cache"))}

    def small_files() -> None:  # every file this process writes is cut at 64 KB: EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    v2 = write_adapter(tmp_path / "v2", seed=2, size=2048)
    res = subprocess.run([*CLI, "-C", str(work), "commit", "-m", "v2", "--from", str(v2)], env=ENV,
                         capture_output=True, text=True, preexec_fn=small_files, timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith("Error: ") and "file size limit" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert repo.fsck().ok and [c.message for c in repo.log()] == ["v1"]
    assert os.listdir(repo.store.tmp_dir) == []
    repo.gc(grace_seconds=0)
    assert set(Repository(work).store.iter_ids()) == ids_before  # nothing of the failed commit remains
    assert {k: v for k, v in helpers.files_digest(repo.admin_dir).items()
            if not k.startswith(("objects", "commit-cache"))} == refs_before


# -- corruption --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["loose", "packed"])
def test_fsck_names_bad_objects_and_who_needs_them(tmp_path, layout):
    work = tmp_path / "work"
    Repository.init(work)
    if layout == "loose":
        loose_store(work)
    repo = Repository(work)
    c1 = repo.commit("v1", source=write_adapter(tmp_path / "v1", seed=1))
    c2 = repo.commit("v2", source=write_adapter(tmp_path / "v2", seed=2))
    assert run_cli(work, "fsck").returncode == 0
    snap = repo.show(c2.id).snapshot
    victim = snap.file("adapter_model.safetensors").layout.tensors[0].blob
    corrupt_stored(repo.store, victim)  # one corrupted byte
    missing = snap.file("adapter_model.safetensors").layout.tensors[1].blob  # only v2 has it
    if layout == "loose":
        repo.store.path(missing).unlink()
    else:  # one object cannot be taken out of a pack: the pack that holds it (v2's) is damaged instead
        corrupt_stored(repo.store, missing, position=3)
    repo = Repository(work)

    report = repo.fsck()
    assert not report.ok
    problems = {p.oid: p for p in report.problems}
    assert problems[victim].problem.startswith(f"object {victim} is corrupt")
    assert problems[victim].referenced_by == [f"snapshot {c2.snapshot} (adapter_model.safetensors)"]
    assert problems[missing].problem == "missing" if layout == "loose" else \
        problems[missing].problem.startswith(f"object {missing} is corrupt")
    res = run_cli(work, "fsck")
    assert res.returncode == 1 and victim in res.stdout and c2.snapshot in res.stdout
    assert res.stderr.startswith("Error: 2 bad object(s)")
    # reading the corrupt blob is an error, never a wrong file; the intact version still checks out
    bad = run_cli(work, "checkout", "HEAD", "-o", str(tmp_path / "o2"))
    assert bad.returncode == 1 and ("missing" in bad.stderr or "corrupt" in bad.stderr)
    assert not (tmp_path / "o2" / "adapter_model.safetensors").exists()
    repo.checkout(c1.id, tmp_path / "o1")
    # gc refuses to run on a damaged history
    assert "deletes nothing" in run_cli(work, "gc", "--grace", "0").stderr


# -- gc and the reflog -------------------------------------------------------------------------------------
def test_gc_removes_only_what_nothing_reaches(tmp_path):
    work = tmp_path / "work"
    repo = Repository.init(work)
    v = [write_adapter(tmp_path / f"v{i}", seed=i) for i in range(3)]
    repo.commit("v0", source=v[0])
    repo.switch("exp", create=True)
    exp = repo.commit("exp", source=v[1])
    repo.switch("main", force=True)
    repo.tag("t0")
    garbage = repo.store.put_bytes(b"nobody points at me" * 100)
    repo.store.flush()
    set_age(repo.store, garbage, 7200)
    fresh = repo.store.put_bytes(b"a commit in progress wrote me")
    repo.store.flush()

    dry = repo.gc(dry_run=True)
    assert dry.removed == [garbage] and repo.store.has(garbage)
    report = repo.gc()
    assert report.removed == [garbage] and not repo.store.has(garbage)
    assert repo.store.has(fresh) and report.kept_recent == 1  # inside the grace period

    # delete the branch: its commit is still reachable through the reflog, and can be restored from it
    repo.delete_branch("exp")
    assert repo.gc(grace_seconds=0).removed == [fresh]
    assert repo.store.has(exp.id) and repo.fsck().ok
    log = json.loads(run_cli(work, "reflog", "exp", "--json").stdout)
    assert log[0]["old"] == exp.id and log[0]["new"] is None
    assert run_cli(work, "branch", "exp", log[0]["old"]).returncode == 0
    assert repo.branches()["exp"] == exp.id
    repo.checkout("exp", tmp_path / "restored")
    assert helpers.sha256(tmp_path / "restored" / "adapter_model.safetensors") == \
        helpers.sha256(v[1] / "adapter_model.safetensors")


def test_reused_objects_are_freshened_so_gc_spares_them(tmp_path):
    work = tmp_path / "work"
    repo = Repository.init(work)
    src = write_adapter(tmp_path / "v", seed=1)
    repo.commit("v1", source=src)
    blobs = [t.blob for _, t in repo.show("HEAD").snapshot.tensors()]
    for b in blobs:
        set_age(repo.store, b, 7200)
    repo = Repository(work)
    repo.commit("again", source=src, allow_empty=True)  # reuses every blob
    assert all(age_of(repo.store, b) < 60 for b in blobs)


# -- pickle ------------------------------------------------------------------------------------------------
def test_pickle_is_refused_unless_allowed_then_stored_as_safetensors(tmp_path):
    import torch
    from peft import PeftModel

    model = helpers.lora_model(seed=4)
    src = tmp_path / "bin"
    model.save_pretrained(src, safe_serialization=False)
    assert (src / "adapter_model.bin").is_file() and not (src / "adapter_model.safetensors").exists()
    work = tmp_path / "work"
    Repository.init(work)
    res = run_cli(work, "commit", "-m", "pickle", "--from", str(src))
    assert res.returncode == 1 and "pickle" in res.stderr and "--allow-pickle" in res.stderr
    assert run_cli(work, "commit", "-m", "pickle", "--from", str(src), "--allow-pickle").returncode == 0
    repo = Repository(work)
    assert [f.path for f in repo.show("HEAD").snapshot.files] == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]
    out = tmp_path / "out"
    repo.checkout("HEAD", out)
    loaded = PeftModel.from_pretrained(helpers.tiny_base(), out).eval()
    assert torch.equal(helpers.outputs(loaded), helpers.outputs(model))

    # a pickle that would run code is refused even with --allow-pickle (weights_only=True)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "adapter_config.json").write_text("{}")

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"x": Boom()}, evil / "adapter_model.bin")
    res = run_cli(work, "commit", "-m", "evil", "--from", str(evil), "--allow-pickle")
    assert res.returncode == 1 and "weights-only" in res.stderr
    assert not (tmp_path / "pwned").exists()
