"""Behaviour bugs a documentation review found, each pinned by a test that failed before its fix.

Torch-free (numpy adapters, the CLI in-process or as a real process), except the ``demo`` tests, which run
the demo as a real process (it trains a tiny model: marked slow).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from adaptvc import Repository
from adaptvc.errors import UncommittedChangesError
from tests.light import CLI, ENV, assert_refused, big_adapter, cli, corrupt_stored, ok, proc, write_adapter


def history(tmp_path: Path, n: int = 3, **init) -> Repository:
    """A repository with ``n`` versions tagged v1..vn."""
    repo = Repository.init(tmp_path / "work", **init)
    for i in range(1, n + 1):
        write_adapter(repo.work_tree, seed=i)
        repo.commit(f"v{i}")
        repo.tag(f"v{i}")
    return repo


def adapter_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".adaptvc")


# -- 1, 2: the demo ----------------------------------------------------------------------------------------------
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the demo needs torch")


@pytest.mark.slow
@needs_torch
def test_demo_refuses_a_folder_it_did_not_create(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    res = proc(None, "demo", str(target), "--epochs", "1", timeout=300)
    assert_refused(res, str(target), "not empty")
    assert (target / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    assert proc(None, "demo", str(tmp_path / "file"), timeout=300).returncode == 2  # click: not a folder
    assert (tmp_path / "file").read_text() == "x"
    os.symlink(target, tmp_path / "link")
    assert_refused(proc(None, "demo", str(tmp_path / "link"), timeout=300), "symbolic link")
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"]


@pytest.mark.slow
@needs_torch
@pytest.mark.parametrize("epochs", [1, 2])
def test_demo_runs_with_few_epochs_and_again_into_its_own_folder(tmp_path, epochs):
    target = tmp_path / "demo"
    for _ in range(2):  # the second run replaces the first demo's folder (it is recognised as one)
        res = proc(None, "demo", str(target), "--epochs", str(epochs), timeout=600)
        assert res.returncode == 0, res.stderr.decode()
        out = res.stdout.decode()
        assert "demo finished" in out and "bad revision" not in out
        assert out.count("adaptvc commit -m") == epochs
        repo = Repository(target / "adapter")
        assert [c.message for c in repo.log()] == [f"epoch {i}" for i in range(epochs, 0, -1)]
    (target / "notes.txt").write_text("kept")  # a file the user added to a demo folder survives a re-run
    ok(proc(None, "demo", str(target), "--epochs", "1", timeout=600))
    assert (target / "notes.txt").read_text() == "kept"


# -- 3: Ctrl-C ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigint_during_a_large_commit_says_interrupted_and_exits_130(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("small")
    big_adapter(repo.work_tree, seed=2, mbytes=400)
    tmp = repo.admin_dir / "tmp"

    def writing() -> bool:  # a pack is being written (objects land in .adaptvc/tmp, renamed when complete)
        return any(f.stat().st_size > 8 << 20 for f in tmp.iterdir() if f.name.endswith("pack"))

    p = subprocess.Popen([*CLI, "-C", str(repo.work_tree), "commit", "-q", "-m", "big"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if writing():
                break
        except FileNotFoundError:  # a file renamed while we looked
            pass
        time.sleep(0.002)
    assert p.poll() is None, "the commit finished before it could be interrupted; make the adapter bigger"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err.decode().strip() == "Interrupted; nothing half-written was recorded.", err
    assert "Aborted" not in err.decode() and "Traceback" not in err.decode()
    assert not [f for f in tmp.iterdir() if f.name.endswith("pack")]  # the half-written pack is gone
    again = Repository(repo.work_tree)
    assert [c.message for c in again.log()] == ["small"]
    assert again.fsck().ok
    assert ok(cli(repo.work_tree, "fsck")).stdout.strip().endswith("ok")


# -- 4: merge conflict text -----------------------------------------------------------------------------------------
def test_config_key_added_on_both_sides_shows_absent(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1)
    repo.commit("base")
    repo.branch("other")
    write_adapter(repo.work_tree, seed=1, config={"lora_dropout": 0.05})
    repo.commit("ours adds dropout")
    repo.switch("other")
    write_adapter(repo.work_tree, seed=1, config={"lora_dropout": 0.1})
    repo.commit("theirs adds dropout")
    repo.switch("main")
    res = cli(repo.work_tree, "merge", "other")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "CONFLICT (config): adapter_config.json:lora_dropout: changed on both sides: (absent) -> 0.05 / 0.1",
        "Error: merge conflict in 1 place(s): adapter_config.json:lora_dropout (changed on both sides: (absent) "
        "-> 0.05 / 0.1); nothing was written: choose a side with --strategy ours|theirs or --ours GLOB / "
        "--theirs GLOB"], res.stderr
    from adaptvc.ops.merge import MergeConflictError

    with pytest.raises(MergeConflictError) as e:
        repo.merge("other")
    [c] = e.value.result.conflicts
    assert c.to_json()["reason"] == "changed on both sides: (absent) -> 0.05 / 0.1"


def test_config_value_null_is_not_shown_as_absent(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1, config={"layers_pattern": None})
    repo.commit("base")
    repo.branch("other")
    write_adapter(repo.work_tree, seed=1, config={"layers_pattern": "a"})
    repo.commit("ours")
    repo.switch("other")
    write_adapter(repo.work_tree, seed=1, config={"layers_pattern": "b"})
    repo.commit("theirs")
    repo.switch("main")
    res = cli(repo.work_tree, "merge", "other")
    assert res.exit_code == 1 and 'layers_pattern: changed on both sides: null -> "a" / "b"' in res.stderr, res.stderr


# -- 5: repositories without a work tree ----------------------------------------------------------------------------
def no_work_tree(tmp_path: Path) -> Repository:
    repo = Repository.init(tmp_path / "records", work_tree=False)
    for i in (1, 2):
        repo.commit(f"v{i}", source=write_adapter(tmp_path / f"ckpt-{i}", seed=i))
        repo.tag(f"v{i}")
    return repo


def test_no_work_tree_reset_hard_refuses_and_writes_nothing(tmp_path):
    repo = no_work_tree(tmp_path)
    head = repo.head()
    assert_refused(cli(repo.work_tree, "reset", "--hard", "HEAD~1"), "no work tree", "--soft")
    assert repo.head() == head
    assert adapter_files(repo.work_tree) == []
    ok(cli(repo.work_tree, "reset", "--soft", "HEAD~1"))  # moving the branch alone is fine
    assert repo.head() == repo.resolve("v1") and adapter_files(repo.work_tree) == []
    ok(cli(repo.work_tree, "reset", "v2"))
    assert repo.head() == repo.resolve("v2") and adapter_files(repo.work_tree) == []


def test_no_work_tree_diff_needs_two_versions(tmp_path):
    repo = no_work_tree(tmp_path)
    assert_refused(cli(repo.work_tree, "diff"), "no work tree", "name two versions")
    assert_refused(cli(repo.work_tree, "diff", "v1"), "no work tree", "name two versions")
    res = json.loads(ok(cli(repo.work_tree, "diff", "v1", "v2", "--json")).stdout)
    assert res["summary"]["tensors"]["modified"] == 8 and res["summary"]["tensors"]["removed"] == 0


def test_no_work_tree_merge_writes_no_files(tmp_path):
    repo = no_work_tree(tmp_path)
    repo.branch("other", "v1")
    repo.switch("other")
    repo.commit("v3", source=write_adapter(tmp_path / "ckpt-3", seed=1, config={"lora_dropout": 0.1}))
    repo.switch("main")
    res = ok(cli(repo.work_tree, "merge", "other", "--json"))
    assert json.loads(res.stdout)["id"] == repo.head()
    assert len(repo.show("HEAD").commit.parents) == 2
    assert adapter_files(repo.work_tree) == []


def test_no_work_tree_restore_and_revert(tmp_path):
    repo = no_work_tree(tmp_path)
    assert_refused(cli(repo.work_tree, "restore", "--source", "v1", "adapter_config.json"), "no work tree",
                   "checkout v1 -o DIR")
    res = json.loads(ok(cli(repo.work_tree, "revert", "HEAD", "--json")).stdout)
    assert res["id"] == repo.head() and repo.show("HEAD").snapshot.id == repo.show("v1").snapshot.id
    assert adapter_files(repo.work_tree) == []


def test_no_work_tree_python_api(tmp_path):
    from adaptvc.errors import NoWorkTreeError

    repo = no_work_tree(tmp_path)
    head = repo.head()
    with pytest.raises(NoWorkTreeError, match="reset --soft"):
        repo.reset("HEAD~1", "hard")
    with pytest.raises(NoWorkTreeError, match="name two versions"):
        repo.diff("v1")
    with pytest.raises(NoWorkTreeError, match="checkout HEAD -o DIR"):
        repo.restore(["adapter_config.json"])
    assert repo.head() == head and adapter_files(repo.work_tree) == []
    assert repo.diff("v1", "v2").summary()["tensors"]["modified"] == 8
    repo.reset("HEAD~1", "soft")
    assert repo.head() == repo.resolve("v1")
    repo.reset("v2")
    repo.branch("other", "v1")
    repo.switch("other")
    repo.commit("v3", source=write_adapter(tmp_path / "ckpt-3", seed=1, config={"lora_dropout": 0.1}))
    repo.switch("main")
    merged = repo.merge("other")
    assert merged.id == repo.head() and adapter_files(repo.work_tree) == []
    repo.revert("HEAD", mainline=1)
    assert repo.show("HEAD").snapshot.id == repo.show("v2").snapshot.id and adapter_files(repo.work_tree) == []


# -- 6: a clone keeps the repository's base pin ---------------------------------------------------------------------
def test_clone_keeps_the_base_pin(tmp_path):
    origin = Repository.init(tmp_path / "origin", base="org/tiny", base_revision="abc123")
    write_adapter(origin.work_tree, seed=1)
    origin.commit("v1")
    assert (origin.show().commit.base.name_or_path, origin.show().commit.base.revision) == ("org/tiny", "abc123")
    store = tmp_path / "store"
    origin.add_remote("origin", str(store))
    origin.push("origin")
    clone = Repository.clone(str(store), tmp_path / "clone")
    write_adapter(clone.work_tree, seed=2)
    mine = clone.commit("theirs: clone")
    assert (mine.base.name_or_path, mine.base.revision) == ("org/tiny", "abc123")
    write_adapter(origin.work_tree, seed=3)
    origin.commit("ours: origin")
    origin.push("origin")
    ok(cli(clone.work_tree, "fetch"))
    res = ok(cli(clone.work_tree, "merge", "origin/main", "--json"))
    assert len(clone.show(json.loads(res.stdout)["id"]).commit.parents) == 2


def test_clone_of_unpinned_history_adds_no_pin(tmp_path):
    origin = Repository.init(tmp_path / "origin")
    write_adapter(origin.work_tree, seed=1)
    origin.commit("v1")
    origin.add_remote("origin", str(tmp_path / "store"))
    origin.push("origin")
    clone = Repository.clone(str(tmp_path / "store"), tmp_path / "clone")
    assert "base" not in clone.config  # the adapter config decides, as in the origin
    write_adapter(clone.work_tree, seed=2, config={"base_model_name_or_path": "org/other"})
    assert clone.commit("v2").base.name_or_path == "org/other"


# -- 7: which remote ------------------------------------------------------------------------------------------------
def test_no_default_remote_among_several(tmp_path):
    repo = history(tmp_path, 1)
    for name in ("zeta", "alpha"):
        ok(cli(repo.work_tree, "remote", "add", name, str(tmp_path / f"store-{name}")))
    for command in ("push", "fetch", "pull", "ls-remote"):
        assert_refused(cli(repo.work_tree, command), "no upstream", "alpha, zeta", "name the remote")
    assert not (tmp_path / "store-alpha").exists() and not (tmp_path / "store-zeta").exists()
    ok(cli(repo.work_tree, "push", "zeta"))
    assert (tmp_path / "store-zeta").exists() and not (tmp_path / "store-alpha").exists()
    ok(cli(repo.work_tree, "fetch", "zeta"))
    ok(cli(repo.work_tree, "ls-remote", "zeta"))
    # one remote: it is the upstream; with origin among several, origin is
    ok(cli(repo.work_tree, "remote", "remove", "alpha"))
    assert "zeta" in ok(cli(repo.work_tree, "push")).stdout
    ok(cli(repo.work_tree, "remote", "add", "origin", str(tmp_path / "store-origin")))
    assert "origin" in ok(cli(repo.work_tree, "push")).stdout


# -- 8, 9: remote add / remove --------------------------------------------------------------------------------------
AZURE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT",
             "AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID")


def test_remote_add_needs_no_credentials(tmp_path):
    repo = history(tmp_path, 1)
    env = {k: None for k in AZURE_ENV}
    ok(cli(repo.work_tree, "remote", "add", "lake", "az://container/x", env=env))
    ok(cli(repo.work_tree, "remote", "add", "bucket", "s3://some-bucket/x", env=env))
    assert ok(cli(repo.work_tree, "remote", "-v")).stdout.split("\n")[:2] == ["bucket\ts3://some-bucket/x",
                                                                              "lake\taz://container/x"]
    # using it is what needs them, and says so in one line
    assert_refused(cli(repo.work_tree, "push", "lake", env=env), "AZURE_STORAGE_CONNECTION_STRING")
    # a URL no remote can be is still refused when added
    assert_refused(cli(repo.work_tree, "remote", "add", "bad", "az://Bad_Name/x"), "invalid Azure container name")
    assert_refused(cli(repo.work_tree, "remote", "add", "bad", "s3://Bad_Bucket/x"), "invalid S3 bucket name")
    assert_refused(cli(repo.work_tree, "remote", "add", "bad", "s3://bucket/../x"), "invalid path")
    assert_refused(cli(repo.work_tree, "remote", "add", "bad", "gopher://x/y"), "unsupported remote URL")
    assert "bad" not in repo.remotes()


def test_remote_remove_unknown_name(tmp_path):
    repo = history(tmp_path, 1)
    line = assert_refused(cli(repo.work_tree, "remote", "remove", "nosuch"))
    assert line == "Error: no such remote 'nosuch'", line
    from adaptvc.errors import RefNotFoundError, RemoteNotFoundError

    with pytest.raises(RemoteNotFoundError, match=r"^no such remote 'nosuch'$") as e:
        repo.remove_remote("nosuch")
    assert isinstance(e.value, RefNotFoundError) and isinstance(e.value, KeyError)


# -- 10: pull on a diverged branch -------------------------------------------------------------------------------
def test_pull_on_diverged_branch_suggests_merge(tmp_path):
    origin = history(tmp_path, 1)
    origin.add_remote("origin", str(tmp_path / "store"))
    origin.push("origin")
    clone = Repository.clone(str(tmp_path / "store"), tmp_path / "clone")
    write_adapter(origin.work_tree, seed=7)
    origin.commit("theirs")
    origin.push("origin")
    write_adapter(clone.work_tree, seed=8)
    clone.commit("mine")
    line = assert_refused(cli(clone.work_tree, "pull"), "diverged", "adaptvc merge origin/main")
    assert "switch -c" not in line and "checkout" not in line
    # pulling from a URL records no origin/main: the suggestion names the fetched version
    line = assert_refused(cli(clone.work_tree, "pull", str(tmp_path / "store")), "diverged")
    assert line.endswith(f"run 'adaptvc merge {origin.head()[:12]}'"), line
    ok(cli(clone.work_tree, "merge", "origin/main"))  # and what it suggests works


# -- 11: verify-base's mismatch message ------------------------------------------------------------------------------
def test_verify_base_mismatch_does_not_suggest_a_force_it_lacks(tmp_path):
    repo = history(tmp_path, 1)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = {f"model.layers.{i}.self_attn.{m}.weight": np.zeros((16, 32), np.float32)
               for i in range(2) for m in ("q_proj", "v_proj")}
    save_file(weights, str(base / "model.safetensors"))
    line = assert_refused(cli(repo.work_tree, "verify-base", "v1", str(base)), "does not match")
    assert "--force" not in line and "force=True" not in line, line
    assert line.endswith("v1 is pinned to org/tiny; check it against that base"), line


# -- 12: delete --json -------------------------------------------------------------------------------------------
def test_tag_and_branch_delete_print_json(tmp_path):
    repo = history(tmp_path, 2)
    v1 = repo.resolve("v1")
    repo.branch("exp", "v1")
    res = json.loads(ok(cli(repo.work_tree, "tag", "-d", "v1", "--json")).stdout)
    assert res == {"name": "v1", "id": v1, "deleted": True}
    res = json.loads(ok(cli(repo.work_tree, "branch", "-d", "exp", "--json")).stdout)
    assert res == {"name": "exp", "id": v1, "deleted": True}
    assert "v1" not in repo.tags() and "exp" not in repo.branches()


# -- 13: checkout's reported size --------------------------------------------------------------------------------
def test_checkout_reports_the_size_it_wrote(tmp_path):
    repo = Repository.init(tmp_path / "work")
    write_adapter(repo.work_tree, seed=1)
    (repo.work_tree / "optimizer.pt").write_bytes(b"\0" * 3_000_000)
    (repo.work_tree / "trainer_state.json").write_text("{}")
    repo.commit("with state", with_training_state=True)

    def reported(*args: str) -> str:
        return ok(cli(repo.work_tree, "checkout", "HEAD", *args)).stdout.rsplit("[", 1)[1].split("]")[0]

    from adaptvc.cli.render import human_bytes

    out = tmp_path / "out"
    text = reported("-o", str(out))
    written = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    assert not (out / "optimizer.pt").exists()
    assert text == human_bytes(written)
    full = tmp_path / "full"
    text = reported("-o", str(full), "--with-training-state")
    assert (full / "optimizer.pt").exists()
    assert text == human_bytes(sum(p.stat().st_size for p in full.iterdir() if p.is_file()))


# -- 14: clone's summary line ---------------------------------------------------------------------------------------
def test_clone_summary_counts_and_pluralises(tmp_path):
    origin = history(tmp_path, 3)
    origin.add_remote("origin", str(tmp_path / "store"))
    origin.push("origin", tags=True)
    res = ok(cli(tmp_path, "clone", str(tmp_path / "store"), "c1", "-r", "v1"))
    assert "(3 versions; HEAD detached at v1)" in res.stdout, res.stdout
    res = ok(cli(tmp_path, "clone", str(tmp_path / "store"), "c2"))
    assert "(3 versions on main)" in res.stdout, res.stdout
    one = Repository.init(tmp_path / "one")
    write_adapter(one.work_tree, seed=1)
    one.commit("only")
    one.add_remote("origin", str(tmp_path / "store1"))
    one.push("origin")
    res = ok(cli(tmp_path, "clone", str(tmp_path / "store1"), "c3"))
    assert "(1 version on main)" in res.stdout, res.stdout


# -- 15: fsck does not tell you to run fsck ----------------------------------------------------------------------
def test_fsck_problem_lines_do_not_advise_fsck(tmp_path):
    repo = history(tmp_path, 2)
    snap = repo.show("v1").snapshot
    blob = next(f for f in snap.files if f.layout is not None).layout.tensors[0].blob
    corrupt_stored(repo.store, blob)
    res = cli(repo.work_tree, "fsck")
    assert res.exit_code == 1
    assert "bad blob" in res.stdout and "corrupt" in res.stdout
    assert "run 'adaptvc fsck'" not in res.stdout + res.stderr, res.stdout
    report = json.loads(cli(repo.work_tree, "fsck", "--json").stdout)
    assert report["problems"] and not any("adaptvc fsck" in p["problem"] for p in report["problems"])


# -- 16: merge with uncommitted changes ------------------------------------------------------------------------
def test_merge_with_uncommitted_changes_is_the_usual_error(tmp_path):
    repo = history(tmp_path, 1)
    repo.branch("other")
    write_adapter(repo.work_tree, seed=5)
    repo.commit("ours")
    repo.switch("other")
    write_adapter(repo.work_tree, seed=6)
    repo.commit("theirs")
    repo.switch("main")
    write_adapter(repo.work_tree, seed=9)  # uncommitted
    with pytest.raises(UncommittedChangesError) as e:
        repo.merge("other")
    assert e.value.paths == ["adapter_model.safetensors"]
    merge_line = assert_refused(cli(repo.work_tree, "merge", "other"), "the work tree has uncommitted changes")
    switch_line = assert_refused(cli(repo.work_tree, "switch", "other"), "the work tree has uncommitted changes")
    assert merge_line.split(";")[0] == switch_line.split(";")[0]
    assert "reset --hard" in merge_line and "--force" not in merge_line  # merge has no --force
    with pytest.raises(UncommittedChangesError):
        repo.revert("HEAD")
    assert os.environ.get("ADAPTVC_DEBUG") is None
