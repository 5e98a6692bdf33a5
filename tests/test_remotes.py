"""The push / fetch / pull / clone contract, run against every remote type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from adaptvc import Repository
from adaptvc.cli.main import cli
from adaptvc.errors import AdaptvcError, ChecksumMismatchError
from adaptvc.remotes import NonFastForwardError
from tests import helpers
from tests.light import corrupt_stored
from tests.objservers import azure_service, object_remote, s3_service  # noqa: F401 (fixtures)


@pytest.fixture(params=["directory", "hub", "s3", "az"])
def remote_url(request, tmp_path, monkeypatch):
    """A URL for an empty remote of each kind: a bare store in a folder, a repository on a local Hub, a prefix
    of a new bucket on a local S3 server (moto) and of a new container on Azurite."""
    if request.param == "directory":
        yield str(tmp_path / "remote-store")
    elif request.param == "hub":
        request.getfixturevalue("hub")
        yield f"hf://alice/{tmp_path.name[-20:].strip('_-.') or 'adapter'}"
    else:
        service = request.getfixturevalue("s3_service" if request.param == "s3" else "azure_service")
        with object_remote(service, monkeypatch) as remote:
            yield remote.url


def three_versions(tmp_path) -> Repository:
    repo = Repository.init(tmp_path / "origin-work")
    model = helpers.lora_model(seed=1)
    for i in range(3):
        helpers.randomize(model, seed=10 + i, only="lora_B" if i else None)
        model.save_pretrained(repo.work_tree)
        repo.commit(f"v{i + 1}")
        repo.tag(f"v{i + 1}")
    return repo


def test_push_then_clone_reproduces_every_commit_tag_and_byte(tmp_path, remote_url):
    repo = three_versions(tmp_path)
    repo.add_remote("origin", remote_url)
    pushed = repo.push(tags=True)
    assert pushed.bytes > 0 and set(pushed.updated) == {"refs/heads/main", "refs/tags/v1", "refs/tags/v2",
                                                          "refs/tags/v3"}
    assert repo.refs.read("refs/remotes/origin/main") == repo.head()

    again = repo.push(tags=True)  # nothing new: nothing moves
    assert again.bytes == 0 and again.updated == {} and again.message == "everything up to date"

    clone = Repository.clone(remote_url, tmp_path / "clone")
    assert [c.id for c in clone.log()] == [c.id for c in repo.log()]
    assert clone.tags() == repo.tags()
    assert clone.current_branch() == "main" and clone.status().clean
    for tag in ("v1", "v2", "v3"):
        a, b = tmp_path / f"a-{tag}", tmp_path / f"b-{tag}"
        repo.checkout(tag, a)
        clone.checkout(tag, b)
        assert helpers.files_digest(a) == helpers.files_digest(b)
    assert clone.fsck().ok

    old = Repository.clone(remote_url, tmp_path / "clone-v1", revision="v1")
    assert old.head() == repo.resolve("v1") and old.current_branch() is None


def test_fetch_moves_only_what_changed(tmp_path, remote_url):
    repo = three_versions(tmp_path)
    repo.add_remote("origin", remote_url)
    repo.push()
    clone = Repository.clone(remote_url, tmp_path / "clone")
    name = helpers.edit_tensor(repo.work_tree / "adapter_model.safetensors", "layers.1.self_attn.v_proj.lora_B")
    c = repo.commit("one tensor")
    repo.push()
    result = clone.fetch()
    tensor = dict(repo.show(c.id).snapshot.tensors())[name]
    metadata = repo.store.size(c.id) + repo.store.size(c.snapshot)
    assert result.bytes == tensor.size + metadata  # the tensor, the snapshot, the commit: nothing else
    assert result.updated["refs/remotes/origin/main"][1] == c.id
    assert clone.head() != c.id  # fetch does not touch the branch or the work tree
    pulled = clone.pull()
    assert clone.head() == c.id and clone.status().clean and pulled.message.startswith("fast-forwarded")
    assert helpers.sha256(clone.work_tree / "adapter_model.safetensors") == \
        helpers.sha256(repo.work_tree / "adapter_model.safetensors")


def test_a_concurrent_push_is_refused_then_succeeds_after_pull(tmp_path, remote_url):
    repo = three_versions(tmp_path)
    repo.add_remote("origin", remote_url)
    repo.push()
    alice = Repository.clone(remote_url, tmp_path / "alice")
    bob = Repository.clone(remote_url, tmp_path / "bob")
    helpers.edit_tensor(alice.work_tree / "adapter_model.safetensors", "lora_A", seed=1)
    alice.commit("alice")
    alice.push()
    helpers.edit_tensor(bob.work_tree / "adapter_model.safetensors", "lora_A", seed=2)
    bob_commit = bob.commit("bob")
    with pytest.raises(NonFastForwardError, match="run 'adaptvc pull"):
        bob.push()
    assert Repository.clone(remote_url, tmp_path / "check").log()[0].message == "alice"  # not clobbered
    with pytest.raises(AdaptvcError, match="diverged"):
        bob.pull()
    # bob keeps his version on a branch, takes alice's main, and pushes his branch
    bob.branch("bob-exp")
    bob.checkout("origin/main", force=True)
    assert bob.head() == alice.head() and bob.current_branch() is None
    assert bob.push(branches=["bob-exp"]).updated["refs/heads/bob-exp"] == (None, bob_commit.id)

    # the simple case: pull (fast-forward), then push succeeds
    carol = Repository.clone(remote_url, tmp_path / "carol")
    helpers.edit_tensor(alice.work_tree / "adapter_model.safetensors", "lora_B", seed=3)
    alice.commit("alice 2")
    alice.push()
    carol.pull()
    helpers.edit_tensor(carol.work_tree / "adapter_model.safetensors", "lora_B", seed=4)
    carol.commit("carol")
    assert carol.push().updated["refs/heads/main"][1] == carol.head()


def test_a_corrupt_remote_object_is_refused_on_arrival(tmp_path):
    repo = three_versions(tmp_path)
    bare = tmp_path / "bare"
    repo.add_remote("origin", str(bare))
    repo.push()
    from adaptvc.storage.disk_objects import DiskObjectStore as ObjectStore

    store = ObjectStore(bare)
    victim = repo.show("HEAD").snapshot.file("adapter_model.safetensors").layout.tensors[0].blob
    corrupt_stored(store, victim, zero=True)
    fresh = Repository.init(tmp_path / "fresh")
    fresh.add_remote("origin", str(bare))
    with pytest.raises(ChecksumMismatchError):
        fresh.fetch()
    assert not fresh.store.has(victim)


def test_remote_commands(tmp_path):
    repo = three_versions(tmp_path)
    work = str(repo.work_tree)

    def run(*args, code=0):
        res = CliRunner().invoke(cli, ["-C", work, *args])
        assert res.exit_code == code, (res.stdout, res.stderr)
        return res

    run("remote", "add", "origin", str(tmp_path / "bare"))
    run("remote", "add", "backup", f"file://{tmp_path / 'backup'}")
    assert run("remote", "-v").stdout.splitlines() == [f"backup\tfile://{tmp_path / 'backup'}",
                                                       f"origin\t{tmp_path / 'bare'}"]
    assert "already exists" in run("remote", "add", "origin", "/x", code=1).stderr
    assert "unsupported remote URL" in run("remote", "add", "s3x", "gopher://x", code=1).stderr
    assert "invalid name" in run("remote", "add", "bad name", "/x", code=1).stderr
    out = json.loads(run("push", "--tags", "--json").stdout)
    assert out["remote"] == "origin" and "refs/tags/v2" in out["updated"]
    run("push", "backup")
    assert "origin/main" in run("log", "--oneline").stdout
    run("remote", "remove", "backup")
    assert run("remote").stdout.split() == ["origin"]
    res = run("clone", str(tmp_path / "bare"), str(tmp_path / "c"))
    assert "3 versions on main" in res.stdout
    assert "nothing to clone" in run("clone", str(tmp_path / "nowhere"), str(tmp_path / "d"), code=1).stderr
    assert "no remote named" in run("push", "nope", code=1).stderr


def test_fsck_remote_says_whether_a_folder_remote_is_whole(tmp_path):
    repo = three_versions(tmp_path)
    bare = tmp_path / "bare"
    repo.add_remote("origin", str(bare))
    repo.push(tags=True)
    res = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "fsck", "--remote", "origin", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True
    from adaptvc.storage.disk_objects import DiskObjectStore

    victim = repo.show("HEAD").snapshot.file("adapter_model.safetensors").layout.tensors[0].blob
    corrupt_stored(DiskObjectStore(bare), victim)
    res = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "fsck", "--remote", "origin"])
    assert res.exit_code == 1 and victim in res.stdout and res.stderr.startswith("Error: ")


def test_a_merge_of_diverged_work_pushes_and_every_version_clones_exactly(tmp_path, remote_url):
    """One side changes only the config, the other only the tensors; the merge is pushed. Every version on
    the remote must be exactly that version: on the Hub each commit's tree is the whole adapter of that
    version (loadable by plain PEFT with revision=), not the previous Hub commit's files patched."""
    from tests.light import write_adapter

    server = Repository.init(tmp_path / "server")
    write_adapter(server.work_tree, seed=1)
    server.commit("v1")
    server.add_remote("origin", remote_url)
    server.push()
    laptop = Repository.clone(remote_url, tmp_path / "laptop")
    write_adapter(server.work_tree, seed=1, config={"lora_dropout": 0.3})
    server.commit("server: dropout 0.3")
    server.push()
    write_adapter(laptop.work_tree, seed=2)
    laptop.commit("laptop: new tensors")
    laptop.fetch()
    laptop.merge("origin/main", "merge")
    assert len(laptop.show("HEAD").commit.parents) == 2
    laptop.push()

    fresh = Repository.clone(remote_url, tmp_path / "fresh")
    assert {c.id for c in fresh.log()} == {c.id for c in laptop.log()}
    for c in laptop.log():
        mine, theirs = tmp_path / f"mine-{c.id[:8]}", tmp_path / f"theirs-{c.id[:8]}"
        laptop.checkout(c.id, mine)
        fresh.checkout(c.id, theirs)
        assert helpers.files_digest(mine) == helpers.files_digest(theirs), c.message
    assert fresh.fsck().ok
    if remote_url.startswith("hf://"):  # what plain PEFT sees at each Hub commit
        from huggingface_hub import HfApi, hf_hub_download

        api = HfApi()
        repo_id = remote_url[len("hf://"):]
        by_title = {c.message.splitlines()[0]: c for c in laptop.log()}
        for hub_commit in api.list_repo_commits(repo_id):
            version = by_title.get(hub_commit.title)
            if version is None:
                continue
            expected = laptop.config_at(laptop.show(version.id).snapshot)
            got = json.loads(Path(hf_hub_download(repo_id, "adapter_config.json",
                                                  revision=hub_commit.commit_id)).read_text())
            assert got == expected, hub_commit.title
