"""Serving: export into immutable per-version folders (and a bucket), atomic deploys, and what is deployed.

Real numpy adapters, real processes for the reader that races the deploys, a real S3 server (moto) read back
with a plain boto3 client. The hotswap of a live model is tested in ``test_serving_hotswap.py`` (it needs torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptvc import Repository
from adaptvc.errors import AdaptvcError, FolderBusyError, InvalidInputError
from adaptvc.serving.deploy import deploy, deployed
from adaptvc.serving.export import export_to_bucket, export_to_folder, plan_export
from adaptvc.serving.layout import (
    RECORD_NAME,
    ExportRecord,
    check_name,
    parse_folder_name,
    rewrite_base,
    version_of,
)
from tests.light import ENV, assert_refused, big_adapter, corrupt_stored, digest, ok, write_adapter
from tests.objservers import object_remote, s3_service  # noqa: F401 (fixture)

NAME = "support-bot"
#: the serving commands, registered for the tests until the lead adds them to adaptvc.cli.main.COMMANDS
SERVING = {"export": "serving", "deploy": "serving", "deployed": "serving"}
RUNNER = ("import sys\nfrom adaptvc.cli.main import COMMANDS, main\n"
          f"for k, v in {SERVING!r}.items():\n    COMMANDS.setdefault(k, v)\n"
          "main(sys.argv[1:])\n")


@pytest.fixture(autouse=True)
def _serving_commands(monkeypatch):
    from adaptvc.cli import main

    monkeypatch.setattr(main, "COMMANDS", {**SERVING, **main.COMMANDS})


def cli(work, *args):
    from tests.light import cli as run

    return run(work, *args)


def proc(work, *args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess:
    """``adaptvc -C work ARGS`` as a real process (arguments may be bytes)."""
    cmd = [sys.executable, "-c", RUNNER, "-C", str(work), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, timeout=timeout)


@pytest.fixture
def repo(tmp_path) -> Repository:
    """A repository named support-bot with three tagged versions of a small numpy adapter."""
    r = Repository.init(tmp_path / NAME)
    for i in (1, 2, 3):
        write_adapter(r.work_tree, seed=i)
        r.commit(f"v{i}")
        r.tag(f"v{i}")
    return r


def checkout(repo: Repository, rev: str, out: Path) -> dict[str, bytes]:
    repo.checkout(rev, out)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def do_deploy(repo: Repository, root: Path, rev: str, **kw):
    return deploy(repo.store, repo.read_commit(rev), root, kw.pop("name", NAME), **kw)


# -- export ------------------------------------------------------------------------------------------------
def test_export_writes_an_immutable_folder_named_by_the_commit_byte_for_byte(repo, tmp_path):
    srv = tmp_path / "srv"
    res = ok(cli(repo.work_tree, "export", "v2", str(srv), "--json"))
    data = json.loads(res.stdout)
    commit = repo.resolve("v2")
    folder = srv / f"{NAME}@{commit[:12]}"  # default name: the repository folder's
    assert data["location"] == str(folder) and data["written"] is True and data["commit"] == commit
    exported = folder_bytes(folder)
    record = json.loads(exported.pop(RECORD_NAME))
    assert exported == checkout(repo, "v2", tmp_path / "co")  # every file byte for byte as committed
    assert record["commit"] == commit and record["name"] == NAME and record["version"] == commit[:12]
    assert record["kind"] == "adaptvc-export" and record["served_base"] is None and record["rewritten"] == {}
    assert record["base"] == repo.read_commit("v2").base.to_dict()
    assert {p: (f["size"], f["hash"]) for p, f in record["files"].items()} == \
        {f.path: (f.size, f.hash) for f in repo.show("v2").snapshot.files}
    assert [p.name for p in srv.iterdir()] == [folder.name]  # no temporary folder, no lock left behind

    before = digest(srv)
    again = json.loads(ok(cli(repo.work_tree, "export", "v2", str(srv), "--json")).stdout)
    assert again["written"] is False and digest(srv) == before  # verified and left exactly as it was

    ok(cli(repo.work_tree, "export", "v1", str(srv), "--name", "other"))
    assert (srv / f"other@{repo.resolve('v1')[:12]}" / "adapter_model.safetensors").is_file()


def test_sub_folder_adapters_are_exported_and_training_state_is_not(tmp_path):
    r = Repository.init(tmp_path / "multi")
    write_adapter(r.work_tree, seed=1)
    write_adapter(r.work_tree / "chat", seed=2)
    (r.work_tree / "trainer_state.json").write_text('{"global_step": 10}')
    r.commit("two adapters", with_training_state=True)
    assert r.show("HEAD").snapshot.file("trainer_state.json") is not None
    res = deploy(r.store, r.read_commit("HEAD"), tmp_path / "srv", "multi", served_base="org/served")
    got = folder_bytes(Path(res.folder))
    assert set(got) == {"adapter_config.json", "adapter_model.safetensors", "chat/adapter_config.json",
                        "chat/adapter_model.safetensors", RECORD_NAME}
    assert json.loads(got["chat/adapter_config.json"])["base_model_name_or_path"] == "org/served"
    assert set(json.loads(got[RECORD_NAME])["rewritten"]) == {"adapter_config.json", "chat/adapter_config.json"}
    assert deployed(tmp_path / "srv", r.store).intact
    (Path(res.folder) / "chat" / "extra.json").write_text("{}")
    [v] = deployed(tmp_path / "srv", r.store).names[0].versions
    assert v.problems == ("chat/extra.json: not listed in its record (adaptvc did not write it)",)


def test_export_keeps_the_progress_contract(repo, tmp_path):
    from adaptvc.progress import ContractCheck

    check = ContractCheck()
    export_to_folder(repo.store, repo.read_commit("v1"), tmp_path / "srv", NAME, progress=check)
    assert check.problems() == [] and check.tasks


@pytest.mark.parametrize("dest", ["gs://bucket/lora", "ftp://host/x", "s3://", "s3://UPPER/x", "s3://b/../x"])
def test_a_destination_url_no_bucket_client_understands_is_refused(repo, dest):
    assert_refused(cli(repo.work_tree, "export", "v1", dest))


def test_the_record_is_deterministic_and_read_back_strictly(repo):
    plan = plan_export(repo.store, repo.read_commit("v1"), NAME)
    assert plan_export(repo.store, repo.read_commit("v1"), NAME).record_bytes == plan.record_bytes
    assert ExportRecord.from_bytes(plan.record_bytes, "x") == plan.record
    for bad in (b"[]", b"{}", b"\xff", b"[" * 10_000 + b"]" * 10_000,
                plan.record_bytes.replace(b'"adapter_config.json"', b'"../../etc/passwd"'),
                plan.record_bytes.replace(b'"format": 1', b'"format": 2')):
        with pytest.raises(AdaptvcError):
            ExportRecord.from_bytes(bad, "x")


def test_served_base_rewrites_only_that_value_and_is_recorded(repo, tmp_path):
    srv = tmp_path / "srv"
    served = "meta-llama/Llama-3.1-8B-Instruct"
    ok(cli(repo.work_tree, "export", "v1", str(srv), "--served-base", served))
    commit = repo.resolve("v1")
    folder = srv / f"{NAME}@{version_of(commit, served)}"
    assert folder.name == f"{NAME}@{commit[:12]}-{folder.name.rsplit('-', 1)[1]}"  # never the plain export's name
    original = checkout(repo, "v1", tmp_path / "co")
    got = folder_bytes(folder)
    record = json.loads(got.pop(RECORD_NAME))
    assert got["adapter_model.safetensors"] == original["adapter_model.safetensors"]
    old_cfg, new_cfg = original["adapter_config.json"], got["adapter_config.json"]
    assert new_cfg == old_cfg.replace(b'"org/tiny"', json.dumps(served).encode())  # that value, nothing else
    assert json.loads(new_cfg)["base_model_name_or_path"] == served
    assert record["served_base"] == served
    assert record["rewritten"] == {"adapter_config.json": {
        "field": "base_model_name_or_path", "from": "org/tiny", "to": served, "original_size": len(old_cfg),
        "original_hash": repo.show("v1").snapshot.file("adapter_config.json").hash}}


@pytest.mark.parametrize("value", ['odd "quoted" \\ näme/✓', "/models/llama 3.1 (local)", "a" * 1024])
def test_an_odd_but_valid_served_base_is_written_exactly(repo, tmp_path, value):
    res = export_to_folder(repo.store, repo.read_commit("v1"), tmp_path / "srv", NAME, served_base=value)
    cfg = (Path(res.location) / "adapter_config.json").read_bytes()
    assert json.loads(cfg)["base_model_name_or_path"] == value


@pytest.mark.parametrize("value", ["", " meta-llama/x", "meta-llama/x\n", "a\x00b", "a\tb", "a\x7fb", "a\u2028b",
                                   "a" * 1025])
def test_a_served_base_a_server_could_not_match_is_refused(repo, tmp_path, value):
    if "\x00" in value:  # cannot be an argument at all: the Python API refuses it
        with pytest.raises(InvalidInputError):
            export_to_folder(repo.store, repo.read_commit("v1"), tmp_path / "srv", NAME, served_base=value)
        return
    assert_refused(cli(repo.work_tree, "export", "v1", str(tmp_path / "srv"), "--served-base", value),
                   "--served-base")
    assert not (tmp_path / "srv").exists() or not any((tmp_path / "srv").iterdir())


def test_rewrite_base_keeps_every_other_byte():
    data = b'{\n  "a": [1, {"base_model_name_or_path": "inner"}],\n  "base_model_name_or_path" :\t"x\\u00e9",' \
           b'\n  "z": "\xc3\xa9"\n}'
    new, original = rewrite_base(data, "org/m")
    assert original == "x\u00e9"
    assert new == data.replace(b'"x\\u00e9"', b'"org/m"')  # the nested key of the same name is untouched
    with pytest.raises(AdaptvcError, match="no base_model_name_or_path"):
        rewrite_base(b'{"r": 4}', "org/m")
    twice, _ = rewrite_base(b'{"base_model_name_or_path": "a", "base_model_name_or_path": null}', "b")
    assert twice == b'{"base_model_name_or_path": "b", "base_model_name_or_path": "b"}'


def test_a_version_without_a_config_cannot_be_served(tmp_path):
    r = Repository.init(tmp_path / "w")
    r.record("weights only", {"adapter_model.safetensors": {"x.lora_A.weight": __import__("numpy").zeros((2, 2))}})
    assert_refused(cli(r.work_tree, "export", "HEAD", str(tmp_path / "srv"), "--name", "w"), "adapter_config.json")


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "x..y", "a@b", ".hidden", "-x", "", "a b", "x.", "é",
                                  "a" * 101, RECORD_NAME])
def test_names_that_could_be_paths_are_refused(repo, tmp_path, name):
    res = cli(repo.work_tree, "deploy", "v1", str(tmp_path / "srv"), f"--name={name}")
    assert_refused(res, "serving name")
    assert not (tmp_path / "srv").exists()
    assert parse_folder_name(f"{name}@{'0' * 12}") is None


@pytest.mark.parametrize("args", [[b"--name=bot\xff"], ["--name=bot", b"--served-base=org/\xff"]])
def test_arguments_that_are_not_utf8_are_refused(repo, tmp_path, args):
    assert_refused(proc(repo.work_tree, "deploy", "v1", str(tmp_path / "srv"), *args), "UTF-8")
    assert not (tmp_path / "srv").exists()


def test_check_name_accepts_plain_names():
    for name in ("support-bot", "Bot_2.1", "a", "x" * 100):
        assert check_name(name) == name
        assert parse_folder_name(f"{name}@0123456789ab") == (name, "0123456789ab")
        assert parse_folder_name(f"{name}@0123456789ab-01234567") == (name, "0123456789ab-01234567")
    assert parse_folder_name("bot@0123456789AB") is None and parse_folder_name("bot@012345") is None


# -- deploy ------------------------------------------------------------------------------------------------
def test_deploy_switches_a_link_and_keeps_n_versions(repo, tmp_path):
    srv = tmp_path / "srv"
    ids = {v: repo.resolve(v)[:12] for v in ("v1", "v2", "v3")}
    out = json.loads(ok(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME, "--json")).stdout)
    assert out["previous"] is None and out["written"] is True
    link = srv / NAME
    assert link.is_symlink() and os.readlink(link) == f"{NAME}@{ids['v1']}"  # relative: the folder can move
    res = ok(cli(repo.work_tree, "deploy", "v2", str(srv), "--name", NAME))
    assert f"was {NAME}@{ids['v1']}" in res.stdout
    assert os.readlink(link) == f"{NAME}@{ids['v2']}"
    assert folder_bytes(link) == folder_bytes(srv / f"{NAME}@{ids['v2']}")

    out = json.loads(ok(cli(repo.work_tree, "deploy", "v3", str(srv), "--name", NAME, "--keep", "2",
                            "--json")).stdout)
    assert out["removed"] == [f"{NAME}@{ids['v1']}"]
    assert {p.name for p in srv.iterdir()} == {NAME, f"{NAME}@{ids['v2']}", f"{NAME}@{ids['v3']}"}

    # roll back to v2 (the folder is reused, verified, not rewritten), keep 1: only v2 remains
    out = json.loads(ok(cli(repo.work_tree, "deploy", "v2", str(srv), "--name", NAME, "--keep", "1",
                            "--json")).stdout)
    assert out["written"] is False and out["removed"] == [f"{NAME}@{ids['v3']}"]
    assert {p.name for p in srv.iterdir()} == {NAME, f"{NAME}@{ids['v2']}"}

    report = json.loads(ok(cli(repo.work_tree, "deployed", str(srv), "--json")).stdout)
    assert report["intact"] is True
    [entry] = report["names"]
    assert entry["name"] == NAME and entry["current"] == f"{NAME}@{ids['v2']}"
    [v] = entry["versions"]
    assert v["current"] and v["checked"] == "store" and v["commit"] == repo.resolve("v2") and v["message"] == "v2"
    text = ok(cli(tmp_path, "deployed", str(srv))).stdout  # outside the repository: against the records
    assert "ok (checked against its record)" in text and f"{NAME} -> {NAME}@{ids['v2']}" in text


def test_keep_goes_by_deploy_order_and_never_removes_what_adaptvc_did_not_write(repo, tmp_path):
    srv = tmp_path / "srv"
    ids = {v: repo.resolve(v)[:12] for v in ("v1", "v2", "v3")}
    for v in ("v1", "v2", "v3"):
        do_deploy(repo, srv, v)
    foreign = srv / f"{NAME}@{'a' * 12}"  # looks like a version, no record
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text("{}")
    extra = srv / f"{NAME}@{ids['v2']}" / "notes.txt"  # a file someone added to an old version
    extra.write_text("mine")
    other = do_deploy(repo, srv, "v1", name="other-bot")  # another name is never pruned
    res = do_deploy(repo, srv, "v1", keep=1)  # rollback: v1 is now the newest deploy
    assert res.removed == (f"{NAME}@{ids['v3']}",)
    left = dict(res.left)
    assert "not written by adaptvc" in left[foreign.name] and "notes.txt" in left[f"{NAME}@{ids['v2']}"]
    assert foreign.is_dir() and extra.read_text() == "mine" and Path(other.folder).is_dir()


@pytest.mark.parametrize("where", [".", ".adaptvc", ".adaptvc/objects"])
def test_the_work_tree_and_the_store_are_never_a_serving_folder(repo, where):
    before = digest(repo.work_tree)
    assert_refused(cli(repo.work_tree, "export", "v1", where), "choose another folder")
    assert_refused(cli(repo.work_tree, "deploy", "v1", where, "--name", NAME), "choose another folder")
    assert digest(repo.work_tree) == before


@pytest.mark.parametrize("keep", ["0", "-1"])
def test_keep_zero_is_refused_before_anything_is_written(repo, tmp_path, keep):
    srv = tmp_path / "srv"
    do_deploy(repo, srv, "v1")
    before = digest(srv)
    assert_refused(cli(repo.work_tree, "deploy", "v2", str(srv), "--name", NAME, "--keep", keep), "--keep")
    assert digest(srv) == before


def test_a_regular_folder_or_file_at_the_name_is_never_replaced(repo, tmp_path):
    srv = tmp_path / "srv"
    (srv / NAME).mkdir(parents=True)
    (srv / NAME / "adapter_config.json").write_text('{"mine": true}')
    before = digest(srv)
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME), "is a folder", "move it away")
    assert digest(srv) == before
    (srv / "bot2").write_text("a file")
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", "bot2"), "is a file")
    assert (srv / "bot2").read_text() == "a file"


@pytest.mark.parametrize("target", ["/etc", "../outside", f"../srv2/{NAME}@0123456789ab", "other@0123456789ab",
                                    f"{NAME}@0123456789ab/../..", "support-bot-x"])
def test_a_link_at_the_name_pointing_elsewhere_is_refused(repo, tmp_path, target):
    srv = tmp_path / "srv"
    srv.mkdir()
    os.symlink(target, srv / NAME)
    before = digest(srv)
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME), "not a version of")
    assert digest(srv) == before  # nothing written, the link untouched
    res = cli(repo.work_tree, "deployed", str(srv))
    assert res.exit_code == 1 and "not a version of" in res.stdout


def test_a_version_folder_adaptvc_did_not_write_is_never_overwritten(repo, tmp_path):
    srv = tmp_path / "srv"
    folder = srv / f"{NAME}@{repo.resolve('v1')[:12]}"
    folder.mkdir(parents=True)
    before = digest(srv)
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME), "not written by adaptvc")
    (folder / "adapter_model.safetensors").write_bytes(b"someone else's")
    assert_refused(cli(repo.work_tree, "export", "v1", str(srv), "--name", NAME), "not written by adaptvc")
    assert (folder / "adapter_model.safetensors").read_bytes() == b"someone else's" and not (srv / NAME).exists()
    # a record of another export under this name, or a link at the version's name: refused too
    plan = plan_export(repo.store, repo.read_commit("v2"), NAME)
    (folder / RECORD_NAME).write_bytes(plan.record_bytes)
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME), "holds another export")
    del before
    v2 = srv / f"{NAME}@{repo.resolve('v2')[:12]}"
    os.symlink(tmp_path, v2)
    assert_refused(cli(repo.work_tree, "deploy", "v2", str(srv), "--name", NAME), "symbolic link")
    assert v2.is_symlink() and os.readlink(v2) == str(tmp_path)


def test_a_version_folder_changed_after_export_is_never_modified(repo, tmp_path):
    srv = tmp_path / "srv"
    res = do_deploy(repo, srv, "v1")
    do_deploy(repo, srv, "v2")
    weights = Path(res.folder) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    before = digest(srv)
    assert_refused(cli(repo.work_tree, "deploy", "v1", str(srv), "--name", NAME), "was changed after adaptvc")
    assert digest(srv) == before and os.readlink(srv / NAME).endswith(repo.resolve("v2")[:12])


def test_deployed_reports_every_way_a_folder_or_its_record_can_lie(repo, tmp_path):
    srv = tmp_path / "srv"
    f1 = Path(do_deploy(repo, srv, "v1").folder)
    f2 = Path(do_deploy(repo, srv, "v2").folder)
    f3 = Path(do_deploy(repo, srv, "v3").folder)
    assert deployed(srv, repo.store).intact

    # 1. a file changed and its record changed to match: consistent, so only the store can tell
    w = f1 / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    rec = json.loads((f1 / RECORD_NAME).read_bytes())
    import xxhash

    rec["files"]["adapter_model.safetensors"]["hash"] = xxhash.xxh3_128_hexdigest(bytes(data))
    (f1 / RECORD_NAME).write_text(json.dumps(rec))
    # 2. the record claims another commit (the folder's name says otherwise)
    rec2 = json.loads((f2 / RECORD_NAME).read_bytes())
    rec2["commit"] = repo.resolve("v3")
    (f2 / RECORD_NAME).write_text(json.dumps(rec2))
    # 3. the current version: a file replaced by a link, and a file added
    (f3 / "adapter_config.json").unlink()
    os.symlink("/etc/hostname", f3 / "adapter_config.json")
    (f3 / "README.md").write_text("added")

    without_store = {v.folder: v for v in deployed(srv).names[0].versions}
    assert without_store[f1.name].intact  # the lie is self-consistent: the record alone cannot tell
    with_store = {v.folder: v for v in deployed(srv, repo.store).names[0].versions}
    assert "adapter_model.safetensors: its record's hash" in " ".join(with_store[f1.name].problems)
    assert "does not match its commit" in " ".join(with_store[f2.name].problems)
    p3 = " ".join(with_store[f3.name].problems)
    assert "adapter_config.json: a link" in p3 and "README.md: not listed" in p3

    res = cli(repo.work_tree, "deployed", str(srv))
    assert res.exit_code == 1 and "NOT INTACT" in res.stdout and res.stderr.startswith("Error: not intact")
    res = cli(tmp_path, "deployed", str(srv), "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["intact"] is False

    # 4. a record that is not one: nested, huge, a link
    (f1 / RECORD_NAME).write_text("[" * 100_000 + "]" * 100_000)
    (f2 / RECORD_NAME).unlink()
    os.symlink("/etc/passwd", f2 / RECORD_NAME)
    states = {v.folder: v for v in deployed(srv).names[0].versions}
    assert not states[f1.name].written_by_adaptvc and "not written by adaptvc" in states[f1.name].problems[0]
    assert not states[f2.name].written_by_adaptvc and "link" in states[f2.name].problems[0]


def test_a_corrupt_store_makes_nothing_visible(repo, tmp_path):
    srv = tmp_path / "srv"
    do_deploy(repo, srv, "v1")
    before = digest(srv)
    blob = repo.show("v2").snapshot.file("adapter_model.safetensors").layout.tensors[0].blob
    corrupt_stored(repo.store, blob, position=0)
    assert_refused(cli(repo.work_tree, "deploy", "v2", str(srv), "--name", NAME), "corrupt")
    assert digest(srv) == before  # no version folder, no temporary folder, the link where it was


def test_deployed_reports_a_dangling_link(repo, tmp_path):
    srv = tmp_path / "srv"
    res = do_deploy(repo, srv, "v1")
    os.rename(res.folder, tmp_path / "moved")
    report = deployed(srv)
    assert not report.intact and "which is missing" in report.names[0].problems[0]
    do_deploy(repo, srv, "v2")  # a dangling link of the right form is repaired by the next deploy
    assert deployed(srv, repo.store).intact


def test_debris_of_a_killed_deploy_is_removed_and_a_held_lock_is_respected(repo, tmp_path, monkeypatch):
    srv = tmp_path / "srv"
    do_deploy(repo, srv, "v1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    debris = srv / f".adaptvc-tmp-{dead.pid}-0123456789abcdef-{NAME}@x"
    debris.mkdir()
    (debris / "adapter_model.safetensors").write_bytes(b"half")
    do_deploy(repo, srv, "v2")
    assert not debris.exists()
    from adaptvc.serving import export

    monkeypatch.setattr(export, "LOCK_TIMEOUT", 0.2)
    with export.serving_lock(srv), pytest.raises(FolderBusyError):  # another deploy is writing this folder
        do_deploy(repo, srv, "v3")
    assert os.readlink(srv / NAME).endswith(repo.resolve("v2")[:12])


def test_the_base_model_at_hand_is_checked_before_exporting(tmp_path):
    """The silent no-op adapter (vllm#34186): module names that match nothing in the base are refused."""
    import numpy as np
    from safetensors.numpy import save_file

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    rng = np.random.default_rng(0)
    save_file({f"model.layers.{i}.self_attn.{m}.weight": rng.standard_normal((32, 32)).astype("float32")
               for i in range(2) for m in ("q_proj", "v_proj")}, str(base / "model.safetensors"))
    r = Repository.init(tmp_path / "bot")
    write_adapter(r.work_tree, seed=1, config={"base_model_name_or_path": str(base)})
    r.commit("good")
    res = json.loads(ok(cli(r.work_tree, "export", "HEAD", str(tmp_path / "srv"), "--json")).stdout)
    assert res["bases_checked"] == [str(base)]
    # the same adapter saved with module names one level off: loads as a no-op on this base
    from safetensors.numpy import load_file

    w = r.work_tree / "adapter_model.safetensors"
    save_file({k.replace("model.model.layers", "model.decoder.layers"): v for k, v in load_file(str(w)).items()},
              str(w), metadata={"format": "pt"})
    r.commit("renamed modules")
    assert_refused(cli(r.work_tree, "deploy", "HEAD", str(tmp_path / "srv"), "--name", "bot"),
                   "match nothing in the base")
    assert not (tmp_path / "srv" / "bot").exists()
    ok(cli(r.work_tree, "deploy", "HEAD", str(tmp_path / "srv"), "--name", "bot", "--force"))


# -- the reader never sees a mix ---------------------------------------------------------------------------
READER = r"""
import hashlib, json, os, sys, time
root, out, stop = sys.argv[1:4]
link = os.path.join(root, "support-bot")
reads, vanished, missing = [], 0, 0
def sha(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
while not os.path.exists(stop):
    try:
        real = os.path.join(root, os.readlink(link))      # resolve once, then read from the resolved folder
        cfg = sha(os.path.join(real, "adapter_config.json"))
        weights = sha(os.path.join(real, "adapter_model.safetensors"))
        through_link = sha(os.path.join(link, "adapter_model.safetensors"))   # one file through the link
    except FileNotFoundError:
        if not os.path.lexists(link):
            missing += 1                                  # before the first deploy
        else:
            vanished += 1                                 # a pruned version: gone as a whole
        continue
    reads.append([os.path.basename(real), cfg, weights, through_link])
json.dump({"reads": reads, "vanished": vanished, "missing": missing}, open(out, "w"))
"""


def _race(repo: Repository, tmp_path: Path, deploys: int, mbytes: int) -> None:
    tags = []
    for i in range(3):
        big_adapter(repo.work_tree, seed=100 + i, mbytes=mbytes)
        repo.commit(f"big {i}")
        tags.append(repo.resolve("HEAD"))
    expected = {}
    for oid in tags:
        files = checkout(repo, oid, tmp_path / f"co-{oid[:12]}")
        expected[f"{NAME}@{oid[:12]}"] = tuple(hashlib.sha256(files[p]).hexdigest()
                                             for p in ("adapter_config.json", "adapter_model.safetensors"))
    srv = tmp_path / "srv"
    srv.mkdir()
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(srv), str(out), str(stop)])
    try:
        time.sleep(0.3)
        start = time.monotonic()
        for i in range(deploys):
            do_deploy(repo, srv, tags[i % 3], keep=2)
        elapsed = time.monotonic() - start
    finally:
        stop.touch()
        reader.wait(60)
    result = json.loads(out.read_text())
    reads = result["reads"]
    weights = {w for _, w in expected.values()}
    for folder, cfg, w, through_link in reads:
        assert (cfg, w) == expected[folder], folder  # one committed version, complete: never a mix
        assert through_link in weights  # a file read through the link is always one whole committed file
    seen = {r[0] for r in reads}
    assert seen == set(expected), (seen, len(reads))  # the reader saw every version while deploys ran
    assert len(reads) >= deploys, len(reads)
    assert deployed(srv, repo.store).intact
    print(f"{deploys} deploys of {mbytes} MB in {elapsed:.1f} s; {len(reads)} reads, "
          f"{result['vanished']} of a pruned version")


@pytest.mark.slow
def test_a_reader_never_sees_a_mix_while_50_deploys_run(repo, tmp_path):
    _race(repo, tmp_path, deploys=50, mbytes=4)


@pytest.mark.slow
def test_the_reader_does_see_a_mix_when_files_are_rewritten_in_place(tmp_path):
    """The control: the same reader, against files rewritten in place in one folder (what two writers into the
    folder a server reads do), sees mixed versions and partial files."""
    import shutil

    versions = [big_adapter(tmp_path / f"v{i}", seed=i, mbytes=4) for i in range(3)]
    srv = tmp_path / "srv"
    live = srv / f"{NAME}@live"
    shutil.copytree(versions[0], live)
    os.symlink(live.name, srv / NAME)
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(srv), str(out), str(stop)])
    try:
        # rewrite for a few seconds of wall time, so the reader (however late it starts) reads while we write
        deadline, i = time.monotonic() + 4.0, 0
        while time.monotonic() < deadline:
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(versions[i % 3] / f, live / f)
            i += 1
    finally:
        stop.touch()
        reader.wait(60)
    sha = {v: tuple(hashlib.sha256((v / f).read_bytes()).hexdigest()
                    for f in ("adapter_config.json", "adapter_model.safetensors")) for v in versions}
    reads = json.loads(out.read_text())["reads"]
    assert sum((cfg, w) not in sha.values() for _, cfg, w, _ in reads) > 0


@pytest.mark.soak
def test_a_reader_never_sees_a_mix_while_500_deploys_run(repo, tmp_path):
    _race(repo, tmp_path, deploys=500, mbytes=8)


# -- a bucket ----------------------------------------------------------------------------------------------
def _plain_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def _bucket_bytes(client, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix):]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


@pytest.mark.slow
def test_export_to_s3_is_read_back_byte_for_byte_by_a_plain_client(repo, tmp_path, s3_service, monkeypatch):  # noqa: F811
    with object_remote(s3_service, monkeypatch) as remote:
        big_adapter(repo.work_tree, seed=7, mbytes=20)  # more than one part: a multipart upload
        repo.commit("big")
        commit = repo.resolve("HEAD")
        url = f"s3://{remote.bucket}/serving/lora/"
        res = json.loads(ok(cli(repo.work_tree, "export", "HEAD", url, "--json")).stdout)
        assert res["location"] == f"s3://{remote.bucket}/serving/lora/{NAME}@{commit[:12]}" and res["written"]
        local = export_to_folder(repo.store, repo.read_commit("HEAD"), tmp_path / "srv", NAME)
        client = _plain_client()
        got = _bucket_bytes(client, remote.bucket, f"serving/lora/{NAME}@{commit[:12]}/")
        assert got == folder_bytes(Path(local.location))  # every file and the record, byte for byte
        assert set(got) == {"adapter_config.json", "adapter_model.safetensors", RECORD_NAME}

        again = json.loads(ok(cli(repo.work_tree, "export", "HEAD", url, "--json")).stdout)
        assert again["written"] is False

        served = "meta-llama/Llama-3.1-8B-Instruct"
        from adaptvc.progress import ContractCheck

        check = ContractCheck()
        res = export_to_bucket(repo.store, repo.read_commit("v1"), url, NAME, served_base=served, progress=check)
        assert check.problems() == [] and check.tasks[0].done == check.tasks[0].total
        got = _bucket_bytes(client, remote.bucket, f"serving/lora/{res.folder}/")
        original = checkout(repo, "v1", tmp_path / "co-v1")
        assert got["adapter_model.safetensors"] == original["adapter_model.safetensors"]
        assert got["adapter_config.json"] == original["adapter_config.json"].replace(b'"org/tiny"',
                                                                                     json.dumps(served).encode())
        assert json.loads(got[RECORD_NAME])["rewritten"]["adapter_config.json"]["to"] == served

        # an object at a key of the export that holds other bytes is never overwritten
        v2 = repo.resolve("v2")[:12]
        client.put_object(Bucket=remote.bucket, Key=f"serving/lora/{NAME}@{v2}/adapter_model.safetensors", Body=b"x")
        assert_refused(cli(repo.work_tree, "export", "v2", url), "exists with other bytes")
        assert client.get_object(Bucket=remote.bucket,
                                 Key=f"serving/lora/{NAME}@{v2}/adapter_model.safetensors")["Body"].read() == b"x"
        keys = _bucket_bytes(client, remote.bucket, f"serving/lora/{NAME}@{v2}/")
        assert RECORD_NAME not in keys  # an incomplete export never gets its record

        # a record that is not adaptvc's: refused, never replaced
        v3 = repo.resolve("v3")[:12]
        client.put_object(Bucket=remote.bucket, Key=f"serving/lora/{NAME}@{v3}/{RECORD_NAME}", Body=b"[1]")
        assert_refused(cli(repo.work_tree, "export", "v3", url), "not written by adaptvc")


def test_serving_points_only_down_the_layers():
    """Until the lead adds the serving modules to tests/test_layers.py's LAYERS: export and deploy sit below the
    repository (they take a store), only the public hotswap opens a Repository; nothing imports the CLI."""
    from tests.test_layers import graph

    serving = {m: deps for m, deps in graph().items() if m.startswith("adaptvc.serving")}
    assert {"adaptvc.serving.export", "adaptvc.serving.deploy", "adaptvc.serving.hotswap"} <= set(serving)
    for module, deps in serving.items():
        forbidden = ("adaptvc.cli", "adaptvc.integrations") + (() if module == "adaptvc.serving.hotswap"
                                                               else ("adaptvc.repository",))
        assert not [d for d in deps if d.startswith(forbidden)], module
