"""The trust boundary, part 3: remotes (a shared folder, a Hub repository) are strangers.

A remote may name only what a local commit could have captured; it can never make adaptvc write outside
the adapter layout, overwrite a file adaptvc did not write, follow a link, run a command, or use unbounded
memory; its refs must name commits; and failures are one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from adaptvc import Repository
from tests.light import (
    assert_refused,
    canonical,
    cli,
    corrupt_stored,
    nested_json,
    ok,
    peak_rss,
    proc,
    put_raw_object,
    write_adapter,
    zstd_bomb,
)


def loose_remote(root: Path) -> str:
    """A bare folder remote of store format 1 (one file per object), for tests that swap single objects."""
    from adaptvc.remotes.directory import DirectoryRemote

    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"format": 1, "hash": "xxh3-128", "bare": True}))
    DirectoryRemote(str(root)).create()
    return str(root)


def pushed(tmp_path: Path, url: str) -> Repository:
    work = write_adapter(tmp_path / "origin-work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    repo.tag("v1")
    repo.add_remote("origin", url)
    repo.push(tags=True)
    return repo


def _raw(store: Path, oid: str) -> bytes:
    from adaptvc.storage.disk_objects import DiskObjectStore

    return DiskObjectStore(store).read(oid)


def craft_folder_version(store: Path, extra: dict[str, bytes], snapshot_edit=None, commit_edit=None) -> str:
    """On a bare folder remote, a new version on main whose snapshot also names ``extra`` files."""
    head = (store / "refs" / "heads" / "main").read_text().strip()
    commit = json.loads(_raw(store, head))
    snapshot = json.loads(_raw(store, commit["snapshot"]))
    for path, data in extra.items():
        snapshot["files"].append({"path": path, "size": len(data), "hash": put_raw_object(store, data)})
    snapshot["files"].sort(key=lambda f: f["path"])
    if snapshot_edit:
        snapshot_edit(snapshot)
    commit = {**commit, "snapshot": put_raw_object(store, canonical(snapshot)), "parents": [head],
              "message": "evil"}
    if commit_edit:
        commit_edit(commit)
    oid = put_raw_object(store, canonical(commit) if not isinstance(commit, bytes) else commit)
    (store / "refs" / "heads" / "main").write_text(oid + "\n")
    return oid


HOSTILE_PATHS = [".git/config", "train.py", ".adaptvcignore", "a/b/adapter_config.json", "second/.hidden",
                 "checkpoint-5/adapter_config.json", "second/optimizer.pt", ".bashrc"]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_folder_remote_cannot_name_files_outside_the_adapter_layout(tmp_path, path):
    remote = tmp_path / "remote"
    pushed(tmp_path, str(remote))
    craft_folder_version(remote, {path: b"[core]\n\tfsmonitor = touch /tmp/adaptvc-pwned\n"})
    target = tmp_path / "clone"
    assert_refused(cli(tmp_path, "clone", str(remote), str(target)), path)
    assert not target.exists()


def test_pull_never_overwrites_an_untracked_file(tmp_path):
    remote = tmp_path / "remote"
    origin = pushed(tmp_path, str(remote))
    clone = Repository.clone(str(remote), tmp_path / "clone")
    (origin.work_tree / "README.md").write_text("the model card\n")
    origin.commit("v2 with a card")
    origin.push()
    (clone.work_tree / "README.md").write_text("my own notes, never committed\n")
    for args in (["pull"], ["pull", "-f"]):
        assert_refused(cli(clone.work_tree, *args), "README.md", "untracked")
        assert (clone.work_tree / "README.md").read_text() == "my own notes, never committed\n"


@pytest.mark.parametrize("command", [["checkout", "v2"], ["checkout", "-f", "v2"], ["switch", "with-card"],
                                     ["switch", "-f", "with-card"]])
def test_checkout_and_switch_never_overwrite_an_untracked_file(tmp_path, command):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    repo.branch("plain")
    (work / "README.md").write_text("card\n")
    repo.commit("v2")
    repo.tag("v2")
    repo.branch("with-card")
    repo.switch("plain")
    assert not (work / "README.md").exists()
    (work / "README.md").write_text("mine\n")
    assert_refused(cli(work, *command), "README.md", "untracked")
    assert (work / "README.md").read_text() == "mine\n"


def test_a_remote_ref_naming_a_blob_is_refused(tmp_path):
    remote = tmp_path / "remote"
    origin = pushed(tmp_path, str(remote))
    blob = origin.show("HEAD").snapshot.files[0].hash
    (remote / "refs" / "heads" / "evil").write_text(blob + "\n")
    res = cli(origin.work_tree, "fetch")
    assert_refused(res, "refs/heads/evil", "not a commit")
    assert origin.refs.read("refs/remotes/origin/evil") is None
    ok(cli(origin.work_tree, "fsck"))


def test_push_and_fetch_to_a_url_leave_no_half_done_state(tmp_path):
    origin = pushed(tmp_path, str(tmp_path / "remote"))
    other = tmp_path / "other-remote"
    res = ok(cli(origin.work_tree, "push", str(other)))
    assert "Error" not in res.stderr
    assert (other / "refs" / "heads" / "main").read_text().strip() == origin.head()
    ok(cli(origin.work_tree, "fetch", str(other)))
    assert sorted(origin.refs.list("refs/remotes/")) == ["origin/main"]


def test_a_planted_link_in_a_shared_remote_cannot_redirect_a_push(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    origin = pushed(tmp_path, str(remote))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(os, "getpid", lambda: 5151)
    (remote / "refs" / "heads" / ".main.5151.tmp").symlink_to(victim)
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(256):
        d = remote / "objects" / f"{i:02x}"
        if not d.exists():
            d.symlink_to(outside, target_is_directory=True)
    write_adapter(origin.work_tree, seed=2)
    origin.commit("v2")
    res = cli(origin.work_tree, "push")
    assert_refused(res, "symbolic link")
    assert victim.read_text() == "precious\n"
    assert list(outside.iterdir()) == []


def test_a_compression_bomb_from_a_remote_is_stopped(tmp_path):
    import struct


    remote = tmp_path / "remote"
    origin = pushed(tmp_path, loose_remote(remote))
    tensor = max(origin.show("HEAD").snapshot.tensors(), key=lambda nt: nt[1].size)[1]
    packed = zstd_bomb(1500)
    container = b"AVZ1" + struct.pack("<BQ", 1, tensor.size) + struct.pack("<B", 1) + \
        struct.pack("<BQ", 1, len(packed)) + packed
    p = remote / "objects" / tensor.blob[:2] / tensor.blob[2:]
    p.unlink()
    p.with_name(p.name + ".z").write_bytes(container)
    peak, code, err = peak_rss(None, "clone", str(remote), str(tmp_path / "clone"), cwd=tmp_path)
    assert "Traceback" not in err and code == 1, err
    assert peak < 150, peak
    assert not (tmp_path / "clone").exists()


@pytest.mark.parametrize("damage", ["deep-commit", "not-json-commit", "bad-config", "garbage-ref"])
def test_a_damaged_folder_remote_gives_one_line(tmp_path, damage):
    remote = tmp_path / "remote"
    pushed(tmp_path, str(remote))
    if damage == "deep-commit":
        oid = put_raw_object(remote, nested_json(100_000).encode())
        (remote / "refs" / "heads" / "main").write_text(oid + "\n")
    elif damage == "not-json-commit":
        oid = put_raw_object(remote, b"\xff\xfe{")
        (remote / "refs" / "heads" / "main").write_text(oid + "\n")
    elif damage == "bad-config":
        (remote / "config.json").write_text(nested_json(100_000))
    else:
        (remote / "refs" / "heads" / "main").write_bytes(b"\x00" * 40)
    res = proc(None, "clone", str(remote), str(tmp_path / "clone"))
    assert_refused(res)
    assert not (tmp_path / "clone").exists()


# -- the Hub ---------------------------------------------------------------------------------------------
def hub_version(hub, repo_id: str, extra: dict[str, bytes], commit_bytes=None, snapshot_edit=None) -> None:
    """On the test Hub, a new commit on main whose adaptvc snapshot names ``extra`` files (present in the tree)."""
    from tests.hubserver import FileRec

    with hub.state.lock:
        repo = hub.state.repos[repo_id]
        head = repo.commits[repo.branches["main"]]
        tree = dict(head.tree)
        commit = json.loads(tree[".adaptvc/commit.json"].data)
        snapshot = json.loads(tree[".adaptvc/snapshot.json"].data)
        import xxhash

        for path, data in extra.items():
            snapshot["files"].append({"path": path, "size": len(data), "hash": xxhash.xxh3_128_hexdigest(data)})
            tree[path] = FileRec(data, False)
        snapshot["files"].sort(key=lambda f: f["path"])
        if snapshot_edit:
            snapshot_edit(snapshot)
        snap_bytes = canonical(snapshot)
        old_id = xxhash.xxh3_128_hexdigest(tree[".adaptvc/commit.json"].data)
        commit = {**commit, "snapshot": xxhash.xxh3_128_hexdigest(snap_bytes), "parents": [old_id],
                  "message": "evil"}
        tree[".adaptvc/snapshot.json"] = FileRec(snap_bytes, False)
        tree[".adaptvc/commit.json"] = FileRec(commit_bytes if commit_bytes is not None else canonical(commit),
                                               len(commit_bytes or b"") > 10 << 20)
        new = hub.state.new_commit(repo, head.id, "evil", "", tree)
        repo.branches["main"] = new.id


@pytest.mark.parametrize("path", [".git/config", "train.py", ".git/hooks/post-checkout"])
def test_a_malicious_hub_repository_cannot_write_outside_the_adapter(hub, tmp_path, path):
    pushed(tmp_path, "hf://mallory/evil")
    hub_version(hub, "mallory/evil", {path: b"[core]\n\tfsmonitor = touch /tmp/adaptvc-pwned\n"})
    target = tmp_path / "clone"
    assert_refused(cli(tmp_path, "clone", "hf://mallory/evil", str(target)), path)
    assert not target.exists()


def test_an_oversized_commit_from_the_hub_is_refused_without_reading_it_whole(hub, tmp_path):
    pushed(tmp_path, "hf://mallory/huge")
    hub_version(hub, "mallory/huge", {}, commit_bytes=b'{"type": "commit", "pad": "' + b"x" * (80 << 20) + b'"}')
    res = cli(tmp_path, "clone", "hf://mallory/huge", str(tmp_path / "clone"))
    assert_refused(res)
    assert hub.stats.served_for("commit.json") < 70 << 20


def test_a_deeply_nested_commit_from_the_hub_gives_one_line(hub, tmp_path):
    pushed(tmp_path, "hf://mallory/deep")
    hub_version(hub, "mallory/deep", {}, commit_bytes=nested_json(100_000).encode())
    assert_refused(cli(tmp_path, "clone", "hf://mallory/deep", str(tmp_path / "clone")))


def test_an_unreachable_hub_gives_one_line(tmp_path, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_x"}
    res = proc(None, "clone", "hf://alice/anything", str(tmp_path / "c"), env=env, cwd=tmp_path)
    assert_refused(res, "127.0.0.1")


def test_hub_tags_with_invalid_names_are_skipped_not_created(hub, tmp_path):
    origin = pushed(tmp_path, "hf://mallory/tags")
    with hub.state.lock:
        repo = hub.state.repos["mallory/tags"]
        repo.tags["../../escape"] = repo.branches["main"]
        repo.tags["ok-tag"] = repo.branches["main"]
    clone = Repository.clone("hf://mallory/tags", tmp_path / "clone")
    assert sorted(clone.tags()) == ["ok-tag", "v1"]
    assert not (tmp_path / "escape").exists()
    assert origin.head() == clone.head()


def test_no_command_configured_by_a_repository_ever_runs(tmp_path):
    """A git repository whose config names an fsmonitor and a filter: committing in it must not run them."""
    marker = tmp_path / "pwned"
    code = tmp_path / "code"
    code.mkdir()
    subprocess.run(["git", "init", "-q", str(code)], check=True)
    (code / ".gitattributes").write_text("*.py filter=evil\n")
    (code / "train.py").write_text("print('train')\n")
    subprocess.run(["git", "-C", str(code), "add", "."], check=True)
    subprocess.run(["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "c"],
                   check=True)
    for key, value in (("core.fsmonitor", f"touch {marker}-fsmonitor; false"),
                       ("filter.evil.clean", f"touch {marker}-clean; cat"),
                       ("filter.evil.process", f"touch {marker}-process"),
                       ("core.hooksPath", str(tmp_path / "hooks"))):
        subprocess.run(["git", "-C", str(code), "config", key, value], check=True)
    (code / "train.py").write_text("print('train more')\n")  # dirty: git status would hash it through the filter
    os.utime(code / "train.py", (1, 1))
    work = write_adapter(code / "run", seed=1)
    Repository.init(work)
    res = ok(cli(work, "commit", "-m", "v1", "--json"))
    assert json.loads(res.stdout)["provenance"]["dirty"] is True
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []


def test_a_remote_cannot_make_adaptvc_keep_a_half_made_clone(tmp_path):
    remote = tmp_path / "remote"
    pushed(tmp_path, str(remote))
    from adaptvc.storage.disk_objects import DiskObjectStore

    blob = Repository(tmp_path / "origin-work").show("HEAD").snapshot.file("adapter_model.safetensors").layout.header
    corrupt_stored(DiskObjectStore(remote), blob, zero=True)  # corrupt: refused on arrival
    target = tmp_path / "clone"
    target.mkdir()
    assert_refused(cli(tmp_path, "clone", str(remote), str(target)), "corrupt")
    assert list(target.iterdir()) == []
    shutil.rmtree(target)


@pytest.mark.parametrize("damage", ["garbage", "link"])
def test_an_unreadable_folder_remote_ref_is_an_error_not_up_to_date(tmp_path, damage):
    """A remote ref whose content cannot be read made fetch say 'already up to date; skipped … whose names
    cannot be local refs' and exit 0: the name was fine, and the tracked branch was not up to date."""
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    remote = tmp_path / "remote"
    repo.add_remote("origin", str(remote))
    repo.push()
    clone = Repository.clone(str(remote), tmp_path / "clone")
    write_adapter(work, seed=2)
    repo.commit("v2")
    repo.push()
    ref = remote / "refs" / "heads" / "main"
    ref.unlink()
    if damage == "garbage":
        ref.write_text("garbage\n")
    else:
        (tmp_path / "outside").write_text(repo.head() + "\n")
        ref.symlink_to(tmp_path / "outside")
    before = clone.refs.read("refs/remotes/origin/main")
    assert_refused(cli(clone.work_tree, "fetch"), "'refs/heads/main' cannot be read")
    assert clone.refs.read("refs/remotes/origin/main") == before  # nothing half-updated for that ref
