"""The Python API end to end on real PEFT adapters: commit, log, checkout, status, tags, branches."""

from __future__ import annotations

import json
import os

import pytest
import torch
from peft import LoraConfig, PeftModel

from adaptvc import Repository
from adaptvc.errors import (
    InvalidAdapterError,
    NoAdapterError,
    NotARepositoryError,
    NothingToCommitError,
    PickleRefusedError,
    RefExistsError,
    RepositoryExistsError,
    UncommittedChangesError,
    WouldOverwriteError,
)
from tests import helpers


def test_init_layout(tmp_path):
    repo = Repository.init(tmp_path / "w")
    admin = tmp_path / "w" / ".adaptvc"
    assert repo.admin_dir == admin
    assert json.loads((admin / "config.json").read_text()) == {"format": 2, "hash": "xxh3-128", "remotes": {}}
    assert (admin / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (admin / "objects").is_dir() and (admin / "refs" / "heads").is_dir()
    assert repo.log() == []
    assert repo.head() is None
    with pytest.raises(RepositoryExistsError):
        Repository.init(tmp_path / "w")


def test_discovery_from_a_subfolder(repo_dir):
    sub = repo_dir / "a" / "b"
    sub.mkdir(parents=True)
    assert Repository(sub).work_tree == repo_dir.resolve()
    with pytest.raises(NotARepositoryError):
        Repository(repo_dir.parent)


def test_commit_and_checkout_round_trip_byte_exact_and_loadable(repo_dir, tmp_path, base_dir):
    repo = Repository(repo_dir)
    model = helpers.lora_model(seed=3)
    model.save_pretrained(repo_dir)
    expected = helpers.outputs(model)
    c1 = repo.commit("epoch 1")
    assert len(c1.id) == 32 and c1.parents == () and c1.message == "epoch 1"

    helpers.randomize(model, seed=4)
    model.save_pretrained(repo_dir)
    c2 = repo.commit("epoch 2")
    assert c2.parents == (c1.id,)
    assert [c.id for c in repo.log()] == [c2.id, c1.id]

    out = tmp_path / "serve"
    repo.checkout(c1.id, out)
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
        assert (out / name).is_file()
    loaded = PeftModel.from_pretrained(helpers.tiny_base(), out).eval()
    assert torch.equal(helpers.outputs(loaded), expected)

    out2 = tmp_path / "serve2"
    repo.checkout("HEAD", out2)
    assert helpers.files_digest(out2) == {k: v for k, v in helpers.files_digest(repo_dir).items()
                                          if not k.startswith(".adaptvc/")}


def test_every_peft_file_and_sub_folder_adapters_are_kept(repo_dir, tmp_path):
    repo = Repository(repo_dir)
    model = helpers.lora_model()
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"]))
    helpers.randomize(model, seed=9)
    model.save_pretrained(repo_dir)
    (repo_dir / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    (repo_dir / "notes.txt").write_text("not an adapter file")
    c = repo.commit("two adapters")
    paths = [f.path for f in repo.show(c.id).snapshot.files]
    assert paths == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                     "second/adapter_config.json", "second/adapter_model.safetensors", "tokenizer_config.json"]
    out = tmp_path / "out"
    repo.checkout(c.id, out)
    want = {p: helpers.sha256(repo_dir / p) for p in paths}
    assert {p: helpers.sha256(out / p) for p in paths} == want
    assert not (out / "notes.txt").exists()
    loaded = PeftModel.from_pretrained(helpers.tiny_base(), out).eval()
    loaded.load_adapter(str(out / "second"), adapter_name="second")
    loaded.set_adapter("second")
    model.set_adapter("second")
    assert torch.equal(helpers.outputs(loaded), helpers.outputs(model))


def test_one_changed_tensor_adds_about_that_tensor_to_the_store(repo_dir):
    repo = Repository(repo_dir)
    repo.commit("v1")
    before = helpers.store_bytes(repo.admin_dir)
    weights = repo_dir / "adapter_model.safetensors"
    name = helpers.edit_tensor(weights, "layers.0.self_attn.q_proj.lora_B")
    c2 = repo.commit("v2")
    grown = helpers.store_bytes(repo.admin_dir) - before
    snap = repo.show(c2.id).snapshot
    tensor = dict(snap.tensors())[name]
    v1_layout = repo.show("HEAD~1").snapshot.file("adapter_model.safetensors").layout
    assert snap.file("adapter_model.safetensors").layout.header == v1_layout.header  # same names and shapes
    metadata = repo.store.size(c2.id) + repo.store.size(c2.snapshot)
    # the new tensor, the new snapshot and the new commit: nothing else but the new pack's header and index
    from adaptvc.storage.pack import ENTRY, FANOUT, HEADER, PACK_HEADER, TRAILER

    pack_overhead = len(PACK_HEADER) + HEADER.size + FANOUT.size + 2 * ENTRY.size + TRAILER.size
    assert grown == tensor.size + metadata + pack_overhead
    assert repo.status().clean


def test_identical_tensors_are_stored_once(repo_dir):
    repo = Repository(repo_dir)
    c = repo.commit("v1")
    tensors = dict(repo.show(c.id).snapshot.tensors())
    blobs = {t.blob for t in tensors.values()}
    stored = {oid for oid in repo.store.iter_ids() if oid in blobs}
    assert stored == blobs  # every distinct tensor once
    # a second adapter with the same weights adds no tensor blob
    other = repo_dir.parent / "copy"
    other.mkdir()
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        (other / f).write_bytes((repo_dir / f).read_bytes())
    before = set(repo.store.iter_ids())
    c2 = repo.commit("same tensors, no README", source=other)
    new = set(repo.store.iter_ids()) - before
    assert new == {c2.id, c2.snapshot}


def test_status(repo_dir):
    repo = Repository(repo_dir)
    st = repo.status()
    assert not st.clean and st.head is None and st.added  # nothing committed yet
    repo.commit("v1")
    assert repo.status().clean
    name = helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_A")
    cfg = json.loads((repo_dir / "adapter_config.json").read_text())
    cfg["lora_dropout"] = 0.25
    (repo_dir / "adapter_config.json").write_text(json.dumps(cfg))
    st = repo.status()
    assert st.modified == [name] and st.added == [] and st.removed == []
    assert st.config_changed and st.config_keys == ["lora_dropout"]
    assert st.files_modified == ["adapter_config.json", "adapter_model.safetensors"]


def test_status_sees_added_and_removed_tensors(repo_dir):
    repo = Repository(repo_dir)
    repo.commit("q and v")
    helpers.lora_model(targets=("q_proj", "k_proj")).save_pretrained(repo_dir)
    st = repo.status()
    assert st.added and all("k_proj" in n for n in st.added)
    assert st.removed and all("v_proj" in n for n in st.removed)
    assert st.config_changed


def test_nothing_to_commit(repo_dir):
    repo = Repository(repo_dir)
    c = repo.commit("v1")
    with pytest.raises(NothingToCommitError):
        repo.commit("again")
    c2 = repo.commit("again", allow_empty=True)
    assert c2.parents == (c.id,) and c2.snapshot == c.snapshot


def test_checkout_into_work_tree_protects_uncommitted_changes(repo_dir):
    repo = Repository(repo_dir)
    c1 = repo.commit("v1")
    v1_bytes = (repo_dir / "adapter_model.safetensors").read_bytes()
    helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_B")
    c2 = repo.commit("v2")
    helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_A", seed=99)
    dirty = (repo_dir / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UncommittedChangesError):
        repo.checkout("HEAD~1")
    assert (repo_dir / "adapter_model.safetensors").read_bytes() == dirty  # nothing lost
    assert repo.head() == c2.id
    repo.checkout("HEAD~1", force=True)
    assert (repo_dir / "adapter_model.safetensors").read_bytes() == v1_bytes
    assert repo.head() == c1.id and repo.current_branch() is None  # detached
    repo.checkout("main")
    assert repo.current_branch() == "main" and repo.head() == c2.id


def test_commit_on_detached_head_then_branch(repo_dir):
    repo = Repository(repo_dir)
    c1 = repo.commit("v1")
    helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_B")
    c2 = repo.commit("v2")
    repo.checkout(c1.id)
    helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_A", seed=5)
    c3 = repo.commit("experiment")
    assert c3.parents == (c1.id,) and repo.head() == c3.id
    assert repo.branches() == {"main": c2.id}
    repo.switch("exp", create=True)
    assert repo.branches() == {"exp": c3.id, "main": c2.id}
    repo.switch("main")
    assert repo.status().clean and repo.head() == c2.id
    repo.switch("exp")
    assert repo.head() == c3.id and repo.status().clean


def test_switch_removes_sub_folder_adapters_the_other_branch_lacks(repo_dir):
    repo = Repository(repo_dir)
    repo.commit("one adapter")
    repo.switch("multi", create=True)
    model = helpers.lora_model()
    model.add_adapter("second", LoraConfig(r=2, target_modules=["k_proj"]))
    model.save_pretrained(repo_dir)
    repo.commit("two adapters")
    repo.switch("main")
    assert not (repo_dir / "second").exists()
    repo.switch("multi")
    assert (repo_dir / "second" / "adapter_model.safetensors").is_file()


def test_checkout_to_folder_refuses_to_overwrite_different_files(repo_dir, tmp_path):
    repo = Repository(repo_dir)
    c = repo.commit("v1")
    out = tmp_path / "serve"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    with pytest.raises(WouldOverwriteError):
        repo.checkout(c.id, out)
    assert (out / "adapter_config.json").read_text() == "{}"
    with pytest.raises(WouldOverwriteError):  # a file adaptvc did not write is never replaced, even with force
        repo.checkout(c.id, out, force=True)
    assert (out / "adapter_config.json").read_text() == "{}"
    (out / "adapter_config.json").unlink()
    repo.checkout(c.id, out)
    (out / "adapter_config.json").write_text("{}")  # adaptvc wrote it, the user changed it: force replaces it
    with pytest.raises(WouldOverwriteError):
        repo.checkout(c.id, out)
    repo.checkout(c.id, out, force=True)
    repo.checkout(c.id, out)  # identical files are not a conflict
    assert helpers.sha256(out / "adapter_config.json") == helpers.sha256(repo_dir / "adapter_config.json")


def test_tags_and_branches(repo_dir):
    repo = Repository(repo_dir)
    c1 = repo.commit("v1")
    assert repo.tag("v1") == c1.id
    with pytest.raises(RefExistsError):
        repo.tag("v1")
    helpers.edit_tensor(repo_dir / "adapter_model.safetensors", "lora_B")
    c2 = repo.commit("v2")
    repo.tag("v1", force=True)
    assert repo.tags() == {"v1": c2.id}
    repo.delete_tag("v1")
    assert repo.tags() == {}
    repo.branch("exp", "HEAD~1")
    assert repo.branches() == {"exp": c1.id, "main": c2.id}
    repo.delete_branch("exp")
    assert repo.branches() == {"main": c2.id}
    reflog = repo.refs.reflog("refs/heads/exp")
    assert reflog[0].old == c1.id and reflog[0].new is None  # a deleted branch can be found again


def test_base_model_pin(tmp_path, lora_model):
    work = tmp_path / "w"
    repo = Repository.init(work)
    lora_model.peft_config["default"].base_model_name_or_path = "org/base"
    lora_model.peft_config["default"].revision = "rev1"
    lora_model.save_pretrained(work)
    c = repo.commit("from config")
    assert (c.base.name_or_path, c.base.revision) == ("org/base", "rev1")
    helpers.edit_tensor(work / "adapter_model.safetensors", "lora_B")
    c = repo.commit("overridden", base="other/base", base_revision="abc")
    assert (c.base.name_or_path, c.base.revision) == ("other/base", "abc")

    work2 = tmp_path / "w2"
    repo2 = Repository.init(work2, base="pinned/base", base_revision="r0")
    lora_model.save_pretrained(work2)
    c = repo2.commit("repository default")
    assert (c.base.name_or_path, c.base.revision) == ("pinned/base", "r0")


def test_commit_from_another_folder(repo_dir, tmp_path):
    repo = Repository(repo_dir)
    ckpt = tmp_path / "out" / "checkpoint-500"
    helpers.lora_model(seed=11).save_pretrained(ckpt)
    c = repo.commit("from checkpoint", source=ckpt)
    assert repo.show(c.id).snapshot.file("adapter_model.safetensors").hash != \
        repo.worktree_snapshot().file("adapter_model.safetensors").hash


def test_bad_input_leaves_the_store_unchanged(repo_dir, tmp_path):
    repo = Repository(repo_dir)
    repo.commit("v1")
    before = helpers.files_digest(repo.admin_dir)
    weights = repo_dir / "adapter_model.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(InvalidAdapterError, match="outside the data"):
        repo.commit("truncated")
    weights.write_bytes(b"\xff" * 100)  # garbage
    with pytest.raises(InvalidAdapterError):
        repo.commit("garbage")
    weights.write_bytes(good)
    (repo_dir / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(InvalidAdapterError, match="not a JSON object"):
        repo.commit("bad config")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoAdapterError):
        repo.commit("nothing", source=empty)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(PickleRefusedError):
        repo.commit("pickle", source=pickled)
    assert helpers.files_digest(repo.admin_dir) == before


def test_bf16_adapter_round_trip(repo_dir, tmp_path):
    repo = Repository(repo_dir)
    model = helpers.lora_model(seed=21, dtype=torch.bfloat16)
    model.save_pretrained(repo_dir)
    c = repo.commit("bf16")
    assert {t.dtype for _, t in repo.show(c.id).snapshot.tensors()} == {"BF16"}
    out = tmp_path / "o"
    repo.checkout(c.id, out)
    assert helpers.sha256(out / "adapter_model.safetensors") == helpers.sha256(repo_dir / "adapter_model.safetensors")


def test_large_tensors_are_streamed(repo_dir, tmp_path, monkeypatch):
    """Tensors above the buffering limit take the streaming path and still round-trip exactly."""
    from adaptvc.ops import capture as snapshot_module

    monkeypatch.setattr(snapshot_module, "MAX_BUFFERED_TENSOR", 100)
    repo = Repository(repo_dir)
    c = repo.commit("streamed")
    out = tmp_path / "o"
    repo.checkout(c.id, out)
    assert helpers.sha256(out / "adapter_model.safetensors") == helpers.sha256(repo_dir / "adapter_model.safetensors")
    assert os.listdir(repo.admin_dir / "tmp") == []


def test_stat_cache_skips_unchanged_files_and_never_misses_a_change(repo_dir, monkeypatch):
    from adaptvc.ops import capture as snapshot_module
    from adaptvc.storage import stat_cache as index_module

    reads = []
    real = snapshot_module._snapshot_safetensors_file

    def counting(f, st, rel, store, progress, on_disk=True):
        reads.append(rel)
        return real(f, st, rel, store, progress, on_disk)

    monkeypatch.setattr(snapshot_module, "_snapshot_safetensors_file", counting)
    repo = Repository(repo_dir)
    repo.commit("v1")
    weights = repo_dir / "adapter_model.safetensors"
    # a change right after hashing (inside the racy window) is still seen: the entry is not trusted yet
    name = helpers.edit_tensor(weights, "lora_A")
    assert repo.status().modified == [name]
    helpers.edit_tensor(weights, "lora_A", seed=8)
    monkeypatch.setattr(index_module, "RACY_NS", 0)  # pretend time has passed since the last hashing
    reads.clear()
    first = repo.status()
    assert reads == ["adapter_model.safetensors"]  # the file changed since it was recorded: read
    reads.clear()
    assert repo.status() == first and reads == []  # unchanged stat: not read again
    assert repo.commit("v2") and reads == ["adapter_model.safetensors"]  # status stored no blob: read once
    reads.clear()
    with pytest.raises(NothingToCommitError):  # a no-op commit reuses the cached entry: its blobs are stored
        repo.commit("same again")
    assert reads == []
    helpers.edit_tensor(weights, "lora_B", seed=3)  # same size, new content, new mtime
    assert repo.status().modified and reads == ["adapter_model.safetensors"]
