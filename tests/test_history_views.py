"""History views: the graph layout (pure data), show REV:PATH, show --tensor, log --graph/--all, ls-remote,
status ahead/behind. numpy adapters only (fast tier)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from safetensors.numpy import load_file

from adaptvc import Repository
from adaptvc.ops.graph_layout import MAX_LANES, layout, render_text, topological
from tests.light import assert_refused, cli, ok, proc, write_adapter

P = "base_model.model.model.layers"


# -- the graph layout --------------------------------------------------------------------------------------
def check_layout(commits: list[tuple[str, list[str]]]) -> None:
    """The invariants a renderer relies on, for any graph."""
    g = layout(commits)
    rows = g.rows
    position = {r.id: i for i, r in enumerate(rows)}
    assert sorted(position) == sorted({c for c, _ in commits})
    for i, r in enumerate(rows):
        for p in r.parents:  # children above parents
            if p in position:
                assert position[p] > i
        assert 0 <= r.lane < r.width <= g.width
        targets = [e.target for e in r.edges]
        if i + 1 < len(rows):
            nxt = rows[i + 1]
            # every line reaching the next commit lands in its lane; the others keep their lane
            for e in r.edges:
                if e.target == nxt.id:
                    assert e.to_lane == nxt.lane
                else:
                    assert e.to_lane in {x.from_lane for x in nxt.edges} or e.target not in position
            # a commit with a child above is reached by a line
            if any(nxt.id in rows[j].parents for j in range(i + 1)):
                assert nxt.id in targets
        # each of this commit's parents gets a line leaving this commit's lane
        for p in dict.fromkeys(r.parents):
            assert any(e.from_lane == r.lane and e.target == p for e in r.edges), (r.id, p)
        # two lines never end in the same lane for different commits
        ends: dict[int, str] = {}
        for e in r.edges:
            assert ends.setdefault(e.to_lane, e.target) == e.target
    json.dumps(g.to_json())


def test_layout_of_a_merge():
    g = layout([("c3", ["c2", "b1"]), ("b1", ["c1"]), ("c2", ["c1"]), ("c1", [])])
    assert [(r.id, r.lane) for r in g.rows] == [("c3", 0), ("b1", 1), ("c2", 0), ("c1", 0)]
    assert g.to_json() == {"width": 2, "rows": [
        {"id": "c3", "parents": ["c2", "b1"], "lane": 0, "width": 2,
         "edges": [{"from": 0, "to": 0, "target": "c2"}, {"from": 0, "to": 1, "target": "b1"}]},
        {"id": "b1", "parents": ["c1"], "lane": 1, "width": 2,
         "edges": [{"from": 0, "to": 0, "target": "c2"}, {"from": 1, "to": 1, "target": "c1"}]},
        {"id": "c2", "parents": ["c1"], "lane": 0, "width": 2,
         "edges": [{"from": 0, "to": 0, "target": "c1"}, {"from": 1, "to": 0, "target": "c1"}]},
        {"id": "c1", "parents": [], "lane": 0, "width": 1, "edges": []}]}
    assert render_text(g, ["c3", "b1", "c2", "c1"]) == ["* c3", "|\\", "| * b1", "* | c2", "|/", "* c1"]


def test_first_parent_line_is_straight_and_lanes_are_reused():
    commits = [("m2", ["m1", "f2"]), ("f2", ["f1"]), ("m1", ["base", "f1"]), ("f1", ["base"]),
               ("base", [])]
    g = layout(commits)
    assert [r.lane for r in g.rows if r.id.startswith("m") or r.id == "base"] == [0, 0, 0]
    assert g.width == 2
    check_layout(commits)


def test_cut_history_leaves_stubs_and_clock_skew_cannot_point_up():
    g = layout([("b", ["a"]), ("a", ["gone"])])
    assert g.rows[-1].edges[0].target == "gone"  # a stub: its commit is not shown
    # a parent listed before its child (a clock that went backwards) is moved below it
    assert [c for c, _ in topological([("p", []), ("c", ["p"]), ("x", [])])] == ["c", "p", "x"]
    check_layout([("p", []), ("c", ["p"])])
    # duplicates are dropped, an octopus merge is laid out
    check_layout([("m", ["a", "b", "c"]), ("m", ["a"]), ("c", ["r"]), ("b", ["r"]), ("a", ["r"]), ("r", [])])
    assert layout([]).to_json() == {"width": 0, "rows": []}


@pytest.mark.parametrize("seed", range(30))
def test_random_histories_keep_the_invariants(seed):
    rng = random.Random(seed)
    made: list[tuple[str, list[str]]] = []
    for i in range(rng.randint(1, 60)):
        parents = []
        if made and rng.random() > 0.05:
            parents = rng.sample([c for c, _ in made], k=min(len(made), rng.choice([1, 1, 1, 2, 2, 3])))
        made.append((f"c{i}", parents))
    commits = list(reversed(made))
    if seed % 5 == 0:
        commits = commits[: len(commits) // 2]  # cut: parents that are not shown
    check_layout(commits)
    render_text(layout(commits))


def test_too_many_lanes_is_one_error():
    commits = [("top", [f"p{i}" for i in range(MAX_LANES + 5)])]
    with pytest.raises(ValueError, match="lanes"):
        layout(commits)


# -- show, log, ls-remote, status ----------------------------------------------------------------------------
@pytest.fixture
def history(tmp_path):
    """main: one, two (tag v1 at one); branch side from one: side (merged back into main)."""
    work = tmp_path / "w"
    Repository.init(work)
    write_adapter(work, seed=0, dtype="float16")
    ok(cli(work, "commit", "-m", "one"))
    ok(cli(work, "tag", "v1"))
    ok(cli(work, "switch", "-c", "side"))
    write_adapter(work, seed=1, dtype="float16")
    ok(cli(work, "commit", "-m", "side"))
    ok(cli(work, "switch", "main"))
    write_adapter(work, seed=2, dtype="float16")
    ok(cli(work, "commit", "-m", "two"))
    return work


def test_show_rev_path_prints_the_committed_bytes(history, tmp_path):
    repo = Repository(history)
    ok(cli(history, "checkout", "v1", "-o", str(tmp_path / "v1")))
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        res = proc(history, "show", f"v1:{name}")
        assert res.returncode == 0 and res.stdout == (tmp_path / "v1" / name).read_bytes()
    assert proc(history, "show", ":adapter_config.json").stdout == (history / "adapter_config.json").read_bytes()
    assert repo.file_bytes("v1", "adapter_config.json") == (tmp_path / "v1" / "adapter_config.json").read_bytes()
    assert cli(history, "show", "v1:adapter_config.json", "--json").exit_code == 2


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_show_tensor_numbers_match_numpy(tmp_path, dtype):
    work = tmp_path / "w"
    Repository.init(work)
    write_adapter(work, seed=4, dtype=dtype)
    ok(cli(work, "commit", "-m", "one"))
    name = f"{P}.1.self_attn.v_proj.lora_B.weight"
    values = load_file(str(work / "adapter_model.safetensors"))[name].astype(np.float64)
    out = json.loads(ok(cli(work, "show", "HEAD", "--tensor", name, "--json")).stdout)
    assert len(out) == 1
    got = out[0]
    blob = dict(Repository(work).show("HEAD").snapshot.tensors())[name].blob
    assert (got["name"], got["dtype"], got["shape"], got["hash"]) == \
        (name, {"float16": "F16", "float32": "F32"}[dtype], list(values.shape), blob)
    want = {"min": values.min(), "max": values.max(), "mean": values.mean(), "std": values.std(),
            "norm": np.linalg.norm(values)}
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=1e-12, abs=1e-15), key
    text = ok(cli(work, "show", "HEAD", "--tensor", "*layers.0.*lora_A*")).stdout
    assert text.count("tensor ") == 2 and "norm" in text and "dtype" in text


def test_log_graph_all_and_json(history):
    ok(cli(history, "merge", "side", "-m", "merge side"))
    lines = ok(cli(history, "log", "--graph", "--all", "--oneline")).stdout.splitlines()
    commits = [line for line in lines if "*" in line]
    assert len(commits) == 4 and "merge side" in commits[0] and commits[0].startswith("*")
    assert any(line.startswith("|\\") for line in lines) and any(line.startswith("|/") for line in lines)
    assert "side" in commits[1] or "side" in commits[2]
    items = json.loads(ok(cli(history, "log", "--graph", "--json")).stdout)
    assert [len(i["parents"]) for i in items] == [2, 1, 1, 0]
    assert items[0]["graph"]["lane"] == 0 and {e["target"] for e in items[0]["graph"]["edges"]} == \
        set(items[0]["parents"])
    full = ok(cli(history, "log", "--graph")).stdout
    assert "Merged: base" in full and "| " in full
    shown = ok(cli(history, "show", "HEAD")).stdout
    assert "Merged: base" in shown and "merge side" in shown
    # --all reaches a branch HEAD does not
    ok(cli(history, "branch", "lone", "v1"))
    ok(cli(history, "switch", "lone"))
    write_adapter(history, seed=9, dtype="float16")
    ok(cli(history, "commit", "-m", "lone"))
    ok(cli(history, "switch", "main"))
    assert "lone" not in ok(cli(history, "log", "--oneline")).stdout
    assert "lone" in ok(cli(history, "log", "--all", "--oneline")).stdout


def test_ls_remote_and_status_ahead_behind(history, tmp_path):
    bare = tmp_path / "bare"
    ok(cli(history, "remote", "add", "origin", str(bare)))
    ok(cli(history, "push", "origin", "main", "--tags"))
    repo = Repository(history)
    listed = ok(cli(history, "ls-remote")).stdout.splitlines()
    assert sorted(listed) == sorted([f"{repo.resolve('main')}\trefs/heads/main", f"{repo.resolve('v1')}\trefs/tags/v1"])
    out = json.loads(ok(cli(history, "ls-remote", "origin", "--json")).stdout)
    assert out["refs"] == {"refs/heads/main": repo.resolve("main"), "refs/tags/v1": repo.resolve("v1")}
    assert ok(proc(tmp_path, "ls-remote", str(bare))).stdout.decode().count("refs/") == 2  # outside a repository
    assert repo.ls_remote("origin") == out["refs"]
    assert "up to date with 'origin/main'" in ok(cli(history, "status")).stdout
    write_adapter(history, seed=5, dtype="float16")
    ok(cli(history, "commit", "-m", "three"))
    assert "ahead of 'origin/main' by 1 commit." in ok(cli(history, "status")).stdout
    other = tmp_path / "other"
    ok(cli(tmp_path, "clone", str(bare), str(other)))
    write_adapter(other, seed=6, dtype="float16")
    ok(cli(other, "commit", "-m", "theirs 1"))
    write_adapter(other, seed=7, dtype="float16")
    ok(cli(other, "commit", "-m", "theirs 2"))
    ok(cli(other, "push"))
    ok(cli(history, "fetch"))
    st = json.loads(ok(cli(history, "status", "--json")).stdout)
    assert st["upstream"] == {"upstream": "origin/main", "ahead": 1, "behind": 2}
    assert "have diverged, and have 1 and 2 different commits" in ok(cli(history, "status")).stdout
    assert_refused(cli(history, "ls-remote", str(tmp_path / "nothing-here")), "nothing at")


# -- reflog rewriting and expiry (plumbing) ----------------------------------------------------------------------
@pytest.fixture(params=["disk", "memory"])
def refs(request, tmp_path):
    from adaptvc.storage.disk_refs import DiskRefs
    from adaptvc.storage.memory import MemoryRefs

    return DiskRefs(tmp_path) if request.param == "disk" else MemoryRefs()


def test_rewrite_reflog_contract(refs):
    from adaptvc.errors import RefMovedError

    a, b, c = "a" * 32, "b" * 32, "c" * 32
    refs.set_if_equals("refs/heads/x", None, a, "one")
    refs.set_if_equals("refs/heads/x", a, b, "two")
    entries = refs.reflog("refs/heads/x")
    assert [e.message for e in entries] == ["two", "one"]
    refs.rewrite_reflog("refs/heads/x", entries[:1], expected=entries)
    assert refs.reflog("refs/heads/x") == entries[:1]
    with pytest.raises(RefMovedError):  # a move logged since the log was read: not lost
        refs.rewrite_reflog("refs/heads/x", [], expected=entries)
    refs.set_if_equals("refs/heads/x", b, c, "three")
    assert [e.message for e in refs.reflog("refs/heads/x")] == ["three", "two"]
    refs.rewrite_reflog("refs/heads/x", [])
    assert refs.reflog("refs/heads/x") == [] and "refs/heads/x" not in refs.reflog_refs()
    assert refs.read("refs/heads/x") == c  # the ref itself never moves


def test_rewrite_reflog_never_follows_a_link(tmp_path):
    import os

    from adaptvc.errors import SymlinkRefusedError
    from adaptvc.storage.disk_refs import DiskRefs

    refs = DiskRefs(tmp_path / "store")
    (tmp_path / "store").mkdir()
    refs.set_if_equals("refs/heads/x", None, "a" * 32, "one")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store" / "logs" / "refs" / "heads" / "x").unlink()
    os.rmdir(tmp_path / "store" / "logs" / "refs" / "heads")
    os.symlink(outside, tmp_path / "store" / "logs" / "refs" / "heads")
    assert refs.reflog("refs/heads/x") == []  # a log behind a link is not read either
    with pytest.raises(SymlinkRefusedError):
        refs.rewrite_reflog("refs/heads/x", [_entry()])
    assert list(outside.iterdir()) == []


def _entry():
    from adaptvc.storage.base import ReflogEntry

    return ReflogEntry("refs/heads/x", None, "a" * 32, 1.0, "made up")


@pytest.mark.parametrize("text,want", [
    ("now", float("inf")), ("all", float("inf")), ("never", float("-inf")), ("false", float("-inf")),
    ("0", float("inf")), ("30d", 1e9 - 30 * 86400), ("2.weeks.ago", 1e9 - 14 * 86400), ("90 days", 1e9 - 90 * 86400),
    ("12h", 1e9 - 12 * 3600), ("1.month.ago", 1e9 - 30 * 86400), ("2001-09-09T01:46:40+00:00", 1e9),
])
def test_when(text, want):
    from adaptvc.ops.reflog_expire import parse_when

    assert parse_when(text, 1e9) == want


@pytest.mark.parametrize("text", ["soon", "3 fortnights", "x" * 100, "30q", "--all"])
def test_when_refuses_what_it_does_not_understand(text):
    from adaptvc.errors import InvalidInputError
    from adaptvc.ops.reflog_expire import parse_when

    with pytest.raises(InvalidInputError):
        parse_when(text, 1e9)


def test_expire_keeps_reachable_entries_and_drops_old_unreachable_ones(tmp_path):
    from adaptvc.ops.reflog_expire import DAY, expire_reflogs
    from adaptvc.storage.base import ReflogEntry

    work = tmp_path / "w"
    repo = Repository.init(work)
    write_adapter(work, seed=0)
    one = repo.commit("one").id
    write_adapter(work, seed=1)
    two = repo.commit("two").id
    repo.refs.set_if_equals("refs/heads/main", two, one, "reset: moving to one")  # two is unreachable now
    now = 1e10
    old = [ReflogEntry(e.ref, e.old, e.new, now - 40 * DAY, e.message) for e in repo.refs.reflog("refs/heads/main")]
    repo.refs.rewrite_reflog("refs/heads/main", old)
    report = expire_reflogs(repo.store, repo.refs, ["refs/heads/main"], now=now, dry_run=True)
    assert report.to_dict()["refs"]["refs/heads/main"] == {"entries": 3, "dropped": 2}
    assert len(repo.refs.reflog("refs/heads/main")) == 3  # a dry run changes nothing
    expire_reflogs(repo.store, repo.refs, ["refs/heads/main"], now=now)
    assert [e.message for e in repo.refs.reflog("refs/heads/main")] == ["commit (initial): one"]
    expire_reflogs(repo.store, repo.refs, None, now=now + 100 * DAY)  # past 90 days: everything goes
    assert repo.refs.reflog("refs/heads/main") == [] and repo.head() == one
