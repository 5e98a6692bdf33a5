"""Object-storage remotes (S3 on moto's server, Azure Blob on Azurite) beyond the shared contract suite of
``test_remotes.py``: concurrent pushers, killed pushes, bytes counted at the server, remote fsck, and hostile
buckets. Every server is real and on 127.0.0.1; every client is the real client library."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adaptvc import Repository
from adaptvc.errors import ChecksumMismatchError
from adaptvc.hashing import hash_bytes
from adaptvc.objects import canonical_json
from adaptvc.progress import ContractCheck
from adaptvc.remotes import open_remote
from adaptvc.remotes.buckets import PART_SIZE, open_bucket
from adaptvc.remotes.objectstore import object_key
from tests import light
from tests.objservers import azure_service, object_remote, s3_service  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture(params=["s3", "az"])
def remote(request, monkeypatch):
    service = request.getfixturevalue("s3_service" if request.param == "s3" else "azure_service")
    with object_remote(service, monkeypatch) as r:
        yield r


@pytest.fixture
def s3_remote(s3_service, monkeypatch):  # noqa: F811
    with object_remote(s3_service, monkeypatch) as r:
        yield r


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(light.ROOT), **extra}


def edit_tensor(path: Path, name_part: str, seed: int) -> str:
    """Give one tensor (the first whose name contains ``name_part``) new values, with numpy."""
    tensors = load_file(str(path))
    name = next(n for n in sorted(tensors) if name_part in n)
    tensors[name] = np.random.default_rng(seed).standard_normal(tensors[name].shape).astype(tensors[name].dtype)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return name


def history(tmp_path: Path, url: str, versions: int = 3, **adapter) -> Repository:
    repo = Repository.init(tmp_path / "work")
    for i in range(versions):
        light.write_adapter(repo.work_tree, seed=i, **adapter)
        repo.commit(f"v{i + 1}")
        repo.tag(f"v{i + 1}")
    repo.add_remote("origin", url)
    return repo


def remote_fsck(url: str):
    return open_remote(url).fsck()


# -- bytes, counted at the server ---------------------------------------------------------------------------
def test_push_and_fetch_move_exactly_the_changed_tensor_and_metadata(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=128, layers=3)
    progress = ContractCheck()
    first = repo.push(tags=True, progress=progress)
    task = progress.task("push")
    assert progress.problems() == [] and task.total == task.done == first.bytes
    assert remote.proxy.sent("PUT", "/objects/") == first.bytes  # every object once, nothing else
    clone = Repository.clone(remote.url, tmp_path / "clone")

    name = edit_tensor(repo.work_tree / "adapter_model.safetensors", "layers.1.self_attn.v_proj.lora_B", seed=5)
    c = repo.commit("one tensor")
    tensor = dict(repo.show(c.id).snapshot.tensors())[name]
    metadata = repo.store.size(c.id) + repo.store.size(c.snapshot)
    remote.proxy.reset()
    pushed = repo.push()
    assert pushed.bytes == tensor.size + metadata
    assert remote.proxy.sent("PUT", "/objects/") == tensor.size + metadata  # counted at the server

    remote.proxy.reset()
    progress = ContractCheck()
    fetched = clone.fetch(progress=progress)
    assert fetched.bytes == tensor.size + metadata
    assert remote.proxy.received("GET", "/objects/") == tensor.size + metadata  # counted at the server
    assert progress.problems() == [] and progress.task("fetch").done == progress.task("fetch").total
    assert remote.proxy.received("GET") - remote.proxy.received("GET", "/objects/") < 4096  # refs + config
    clone.pull()
    assert (clone.work_tree / "adapter_model.safetensors").read_bytes() == \
        (repo.work_tree / "adapter_model.safetensors").read_bytes()


def test_large_objects_go_in_parts_created_only_once(tmp_path, remote):
    # one tensor larger than a part: S3 multipart / Azure blocks, committed with the create-only condition
    rank = PART_SIZE // (4 * 1024) + 64
    repo = history(tmp_path, remote.url, versions=1, dim=1024, layers=1, rank=rank)
    big = [t for _, t in repo.show("HEAD").snapshot.tensors() if t.size > PART_SIZE]
    assert big
    repo.push()
    if remote.service.scheme == "s3":
        assert any(r.method == "POST" and r.path.endswith(big[0].blob[2:]) for r in remote.proxy.requests)
    bucket = open_bucket(remote.url)
    assert bucket.head(object_key(big[0].blob))[0] == big[0].size
    clone = Repository.clone(remote.url, tmp_path / "clone")
    assert clone.fsck().ok
    assert (clone.work_tree / "adapter_model.safetensors").read_bytes() == \
        (repo.work_tree / "adapter_model.safetensors").read_bytes()


def test_a_corrupt_local_object_never_reaches_the_bucket(tmp_path, s3_remote):
    from adaptvc.ops.graph import closure
    from adaptvc.remotes import RefUpdate
    from adaptvc.storage.disk_objects import DiskObjectStore

    repo = history(tmp_path, s3_remote.url, versions=1, dim=1024, layers=1, rank=PART_SIZE // 4096 + 64)
    (tmp_path / "loose").mkdir()
    local = DiskObjectStore(tmp_path / "loose")  # the same objects, loose files the test can damage
    for oid in closure(repo.store, [repo.head()], local.has):
        local.copy_from(repo.store, oid)
    local.flush()
    victim = max(repo.show("HEAD").snapshot.tensors(), key=lambda nt: nt[1].size)[1]
    assert victim.size > PART_SIZE
    path = local.path(victim.blob)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte: found only after every other part was sent
    path.write_bytes(bytes(data))
    remote = open_remote(s3_remote.url)
    remote.create()
    with pytest.raises(ChecksumMismatchError):
        remote.upload(local, [RefUpdate("refs/heads/main", None, repo.head())])
    assert s3_remote.proxy.sent("PUT", victim.blob[2:]) >= PART_SIZE  # parts went up, then were abandoned
    assert open_bucket(s3_remote.url).head(object_key(victim.blob)) is None  # the multipart upload was abandoned
    assert open_remote(s3_remote.url).list_refs() == {}


# -- corrupt and missing objects on the remote --------------------------------------------------------------
def test_a_corrupt_or_missing_remote_object_is_refused_and_fsck_names_it(tmp_path, remote):
    repo = history(tmp_path, remote.url, dim=64)
    repo.push(tags=True)
    assert remote_fsck(remote.url).ok
    bucket = open_bucket(remote.url)
    victim = repo.show("HEAD").snapshot.file("adapter_model.safetensors").layout.tensors[0]
    bucket.put(object_key(victim.blob), b"\x00" * victim.size)  # same size, other bytes (not conditional)
    fresh = Repository.init(tmp_path / "fresh")
    fresh.add_remote("origin", remote.url)
    with pytest.raises(ChecksumMismatchError):
        fresh.fetch()
    assert not fresh.store.has(victim.blob)
    report = remote_fsck(remote.url)
    assert not report.ok and [(p.oid, p.kind) for p in report.problems] == [(victim.blob, "blob")]
    assert "corrupt" in report.problems[0].problem

    other = repo.show("HEAD~1").snapshot.file("adapter_model.safetensors").layout.tensors[1]
    bucket.delete(object_key(other.blob))
    problems = {(p.oid, p.problem) for p in remote_fsck(remote.url).problems}
    assert (other.blob, "missing") in problems and len(problems) == 2
    assert json.loads(json.dumps(remote_fsck(remote.url).to_dict()))["ok"] is False


# -- many pushers at once -----------------------------------------------------------------------------------
def test_eight_processes_pushing_the_same_branch_one_lands_the_rest_are_told_to_pull(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=64)
    repo.push()
    base = repo.head()
    clones = []
    first = Repository.clone(remote.url, tmp_path / "c0")
    for i in range(8):
        if i:
            shutil.copytree(first.work_tree, tmp_path / f"c{i}", symlinks=True)
        c = Repository(tmp_path / f"c{i}")
        light.write_adapter(c.work_tree, seed=100 + i, dim=64)
        clones.append((c, c.commit(f"pusher {i}").id))
    env = child_env()
    procs = [subprocess.Popen([*light.CLI, "-C", str(c.work_tree), "push"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for c, _ in clones]
    results = [(p.wait(120), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    landed = [i for i, (code, _) in enumerate(results) if code == 0]
    refused = [i for i, (code, err) in enumerate(results) if code == 1 and "run 'adaptvc pull" in err]
    assert len(landed) == 1 and sorted(landed + refused) == list(range(8)), results
    refs = open_remote(remote.url).list_refs()
    assert refs["refs/heads/main"] == clones[landed[0]][1]
    assert open_remote(remote.url).list_refs()["refs/heads/main"] != base
    # nothing lost: every refused pusher still has its version and pushes it to a branch of its own
    for i in refused:  # each pushes its version to a branch of its own, and it lands
        clones[i][0].branch(f"p{i}")
        assert clones[i][0].push(branches=[f"p{i}"]).updated[f"refs/heads/p{i}"] == (None, clones[i][1])
    refs = open_remote(remote.url).list_refs()
    assert {refs[f"refs/heads/p{i}"] for i in refused} | {refs["refs/heads/main"]} == {c for _, c in clones}
    report = remote_fsck(remote.url)
    assert report.ok and report.commits == 9, report.to_dict()


# -- killed pushes --------------------------------------------------------------------------------------------
def _kill_during_pushes(tmp_path: Path, remote, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    repo = Repository.init(tmp_path / "work")
    repo.add_remote("origin", remote.url)
    env = child_env(ADAPTVC_TRANSFER_WORKERS="2")
    interrupted = 0
    for i in range(kills):
        light.write_adapter(repo.work_tree, seed=1000 + i, layers=5, rank=32, dim=512)  # 1.3 MB, 20 tensors
        repo.commit(f"v{i}")
        remote.proxy.reset()
        proc = subprocess.Popen([*light.CLI, "-C", str(repo.work_tree), "push"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wanted = rng.randint(1, 16)  # kill after this many objects reached the server
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and \
                sum(1 for r in list(remote.proxy.requests) if r.method in ("PUT", "POST")
                    and "/objects/" in r.path) < wanted:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        report = remote_fsck(remote.url)  # whatever the refs name is whole
        assert report.ok, (i, report.to_dict())
        if open_remote(remote.url).list_refs().get("refs/heads/main") != repo.head():
            interrupted += 1
    assert interrupted >= max(1, kills // 2)  # most kills landed mid-push
    remote.proxy.reset()
    done = repo.push()
    assert done.updated["refs/heads/main"][1] == repo.head()
    assert remote.proxy.sent("PUT", "/objects/") <= done.bytes  # only what was still missing
    report = remote_fsck(remote.url)
    assert report.ok and report.commits == kills
    clone = Repository.clone(remote.url, tmp_path / "clone")
    assert [c.id for c in clone.log()] == [c.id for c in repo.log()]
    assert (clone.work_tree / "adapter_model.safetensors").read_bytes() == \
        (repo.work_tree / "adapter_model.safetensors").read_bytes()


def test_pushes_killed_midway_leave_the_remote_whole_and_a_repush_completes(tmp_path, remote):
    _kill_during_pushes(tmp_path, remote, kills=5, seed=1)


@pytest.mark.soak
def test_twenty_killed_pushes(tmp_path, remote):
    _kill_during_pushes(tmp_path, remote, kills=20, seed=2)


# -- hostile buckets ----------------------------------------------------------------------------------------
def test_a_ref_naming_a_blob_is_refused(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=64)
    repo.push()
    blob = repo.show("HEAD").snapshot.tensors()[0][1].blob
    open_bucket(remote.url).put("refs/heads/evil", f"{blob}\n".encode())
    fresh = Repository.init(tmp_path / "fresh")
    line = light.assert_refused(light.cli(fresh.work_tree, "fetch", remote.url))
    assert blob[:12] in line
    assert fresh.refs.list("refs/remotes/") == {} and fresh.refs.list("refs/tags/") == {}


def test_a_snapshot_naming_git_config_is_refused_before_anything_is_stored(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=64)
    repo.push()
    bucket = open_bucket(remote.url)
    payload = b"[core]\n\tfsmonitor = touch /tmp/pwned\n"
    blob = hash_bytes(payload)
    snapshot = canonical_json({"type": "snapshot", "format": 1,
                               "files": [{"path": ".git/config", "size": len(payload), "hash": blob}]})
    commit = repo.store.read_commit(repo.head()).to_dict()
    commit.update(snapshot=hash_bytes(snapshot), parents=[], message="evil")
    commit_bytes = canonical_json(commit)
    for data in (payload, snapshot, commit_bytes):
        bucket.put(object_key(hash_bytes(data)), data)
    bucket.put("refs/heads/main", f"{hash_bytes(commit_bytes)}\n".encode())
    fresh = Repository.init(tmp_path / "fresh")
    line = light.assert_refused(light.cli(fresh.work_tree, "fetch", remote.url))
    assert ".git/config" in line
    assert not fresh.store.has(blob) and not fresh.store.has(hash_bytes(snapshot))
    assert list(fresh.store.iter_ids()) == []
    assert not (tmp_path / "x").exists()
    res = light.cli(tmp_path, "clone", remote.url, str(tmp_path / "x"))
    light.assert_refused(res, ".git/config")
    assert not (tmp_path / "x" / ".git").exists()


def test_an_oversized_commit_is_refused_without_being_downloaded(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=64)
    repo.push()
    from adaptvc.storage.base import MAX_METADATA_OBJECT

    junk = b"{" + b" " * (MAX_METADATA_OBJECT + (1 << 20))
    fake = hash_bytes(b"not these bytes")
    bucket = open_bucket(remote.url)
    bucket.put(object_key(fake), junk)
    bucket.put("refs/heads/huge", f"{fake}\n".encode())
    fresh = Repository.init(tmp_path / "fresh")
    remote.proxy.reset()
    line = light.assert_refused(light.cli(fresh.work_tree, "fetch", remote.url))
    assert "larger than" in line
    assert remote.proxy.received("GET", fake[2:]) < 16 << 20  # far from the 65 MB the object has


def test_refs_with_invalid_names_or_contents_are_skipped_and_reported(tmp_path, remote):
    repo = history(tmp_path, remote.url, versions=1, dim=64)
    repo.push()
    bucket = open_bucket(remote.url)
    for key in ("refs/heads/bad..name", "refs/heads/-option", "refs/heads/sp ace", "refs/tags/x.lock"):
        bucket.put(key, f"{repo.head()}\n".encode())
    bucket.put("refs/heads/garbage", b"\xff\xfe not an id")
    r = open_remote(remote.url)
    assert r.list_refs() == {"refs/heads/main": repo.head()}
    assert set(r.skipped_refs) == {"refs/heads/bad..name", "refs/heads/-option", "refs/heads/sp ace",
                                   "refs/tags/x.lock"}
    assert set(r.unreadable_refs) == {"refs/heads/garbage"}
    fresh = Repository.init(tmp_path / "fresh")
    fresh.add_remote("origin", remote.url)
    # a ref whose content cannot be read is an error, never "up to date"; the readable ones still arrive
    line = light.assert_refused(light.cli(fresh.work_tree, "fetch"), "'refs/heads/garbage' cannot be read",
                                "the other refs were fetched")
    assert "skipped" not in line
    assert set(fresh.refs.list("refs/remotes/origin/")) == {"main"}
    report = remote_fsck(remote.url)
    assert {p.kind for p in report.problems} == {"ref"} and len(report.problems) == 5
    bucket.delete("refs/heads/garbage")
    result = fresh.fetch()  # names that cannot be local refs are only listed
    assert "skipped 4 remote ref(s)" in result.message


@pytest.mark.parametrize("behaviour, says", [("strip", "ignored If-None-Match"),
                                             ("refuse", "does not implement conditional writes")])
def test_a_service_without_conditional_writes_is_refused_for_push(tmp_path, s3_service, monkeypatch,  # noqa: F811
                                                                  behaviour, says):
    with object_remote(s3_service, monkeypatch, conditional=behaviour) as remote:
        repo = history(tmp_path, remote.url, versions=1, dim=64)
        line = light.assert_refused(light.cli(repo.work_tree, "push"), "refusing to push", says)
        assert remote.url in line
        keys = list(open_bucket(remote.url).list(""))
        assert not [k for k in keys if not k.startswith("tmp/")]  # no store, no object, no ref was written


def test_missing_client_library_names_the_extra(tmp_path, s3_remote):
    blocker = tmp_path / "blocker"
    (blocker / "boto3").mkdir(parents=True)
    (blocker / "boto3" / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    repo = history(tmp_path, s3_remote.url, versions=1, dim=32)
    res = subprocess.run([*light.CLI, "-C", str(repo.work_tree), "push"], capture_output=True, timeout=60,
                         env=child_env(PYTHONPATH=f"{blocker}{os.pathsep}{light.ROOT}"))
    light.assert_refused(res, "pip install 'adaptvc[s3]'")


def test_errors_are_one_line_and_never_show_a_credential(tmp_path, s3_remote, monkeypatch):
    secret = "s3cr3t-Do-Not-Print-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    repo = history(tmp_path, "s3://no-such-bucket-here/x", versions=1, dim=32)
    res = light.cli(repo.work_tree, "push")
    line = light.assert_refused(res, "no-such-bucket-here")
    assert secret not in res.stderr + res.stdout and "create it first" in line
    res = subprocess.run([*light.CLI, "-C", str(repo.work_tree), "push"], capture_output=True, timeout=60,
                         env=child_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_SECRET_ACCESS_KEY=secret,
                                       AWS_MAX_ATTEMPTS="1"))
    line = light.assert_refused(res, "cannot reach")
    assert secret.encode() not in res.stderr + res.stdout
    bad = light.cli(repo.work_tree, "clone", "s3://Bad_Bucket/x", str(tmp_path / "y"))
    light.assert_refused(bad, "invalid S3 bucket name")
    bad = light.cli(repo.work_tree, "clone", "s3://bucket/../x", str(tmp_path / "y"))
    light.assert_refused(bad, "invalid path")


def test_transfer_workers_is_bounded(monkeypatch):
    from adaptvc.errors import InvalidInputError
    from adaptvc.remotes.buckets import transfer_workers

    assert transfer_workers({}) == 8 and transfer_workers({"ADAPTVC_TRANSFER_WORKERS": "3"}) == 3
    for bad in ("0", "65", "many", "-1"):
        with pytest.raises(InvalidInputError, match="ADAPTVC_TRANSFER_WORKERS"):
            transfer_workers({"ADAPTVC_TRANSFER_WORKERS": bad})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
