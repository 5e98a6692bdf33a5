"""``adaptvc gc -n`` says what ``adaptvc gc`` would do — the same objects, the same counts — and changes nothing.

Two ways it used to under-report: on a store of packs it counted the objects it would remove as "recent" too,
and it did not expire reflogs (the real run does, first), so objects only an expired reflog entry kept alive
were reported as kept.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from adaptvc import Repository
from tests.light import cli, digest, loose_store, ok, write_adapter

DAY = 86400.0


def make_repo(folder: Path, packed: bool) -> Repository:
    work = write_adapter(folder, seed=1)
    Repository.init(work)
    if not packed:
        loose_store(work)
    repo = Repository(work)
    assert repo.store_format == (2 if packed else 1)
    repo.commit("v1")
    return repo


def scratch_version(repo: Repository, seed: int) -> str:
    """A version committed on a branch that is then deleted: only reflog entries still reach it."""
    repo.branch("scratch")
    repo.switch("scratch")
    write_adapter(repo.work_tree, seed=seed)
    oid = repo.commit("scratch").id
    repo.switch("main")
    repo.delete_branch("scratch")
    return oid


def age_reflogs(repo: Repository, days: float) -> None:
    """Make every reflog entry ``days`` old (git expires unreachable entries after 30 days, all after 90)."""
    for ref in ["HEAD", *repo.refs.reflog_refs()]:
        before = repo.refs.reflog(ref)
        if before:
            old = [dataclasses.replace(e, time=e.time - days * DAY) for e in before]
            repo.refs.rewrite_reflog(ref, old, expected=before)


def forget_reflogs(repo: Repository) -> None:
    for log in (repo.admin_dir / "logs").rglob("*"):
        if log.is_file():
            log.write_text("")


def gc_json(repo: Repository, *args: str) -> dict:
    return json.loads(ok(cli(repo.work_tree, "gc", "--json", *args)).stdout)


def store_state(repo: Repository) -> dict[str, str]:
    return {k: v for k, v in digest(repo.admin_dir).items() if not k.startswith(("writers", "tmp"))}


@pytest.mark.parametrize("packed", [True, False], ids=["packs", "loose"])
def test_a_dry_run_counts_what_it_would_remove_once_not_also_as_recent(tmp_path, packed):
    repo = make_repo(tmp_path / "work", packed)
    garbage = scratch_version(repo, seed=5)
    forget_reflogs(repo)
    before = store_state(repo)
    dry = gc_json(repo, "-n", "--grace", "0")
    assert store_state(repo) == before, "a dry run changed the store"
    assert garbage in dry["removed"]
    assert dry["kept_recent"] == 0, dry  # nothing young and unreachable here: all of it goes
    text = ok(cli(repo.work_tree, "gc", "-n", "--grace", "0")).stdout
    assert f"kept {dry['reachable']} reachable and 0 recent" in text, text
    real = gc_json(repo, "--grace", "0")
    assert sorted(real["removed"]) == sorted(dry["removed"])
    assert (real["kept_recent"], real["reachable"], real["bytes_freed"]) == \
        (dry["kept_recent"], dry["reachable"], dry["bytes_freed"])
    assert not repo.store.has(garbage)


@pytest.mark.parametrize("packed", [True, False], ids=["packs", "loose"])
def test_young_unreachable_objects_are_recent_in_a_dry_run_and_in_the_real_one(tmp_path, packed):
    """Within the grace period nothing goes: both runs count the scratch version's objects as recent."""
    repo = make_repo(tmp_path / "work", packed)
    scratch_version(repo, seed=5)
    forget_reflogs(repo)
    dry = gc_json(repo, "-n")
    real = gc_json(repo)
    assert dry["removed"] == real["removed"] == []
    assert dry["kept_recent"] == real["kept_recent"] > 0


@pytest.mark.parametrize("packed", [True, False], ids=["packs", "loose"])
def test_a_dry_run_expires_reflogs_in_memory_as_the_real_run_does_on_disk(tmp_path, packed):
    repo = make_repo(tmp_path / "work", packed)
    garbage = scratch_version(repo, seed=5)
    age_reflogs(repo, days=40)  # past the 30 days after which an entry naming an unreachable commit expires
    logs = {ref: repo.refs.reflog(ref) for ref in ["HEAD", *repo.refs.reflog_refs()]}
    before = store_state(repo)
    dry = gc_json(repo, "-n", "--grace", "0")
    assert store_state(repo) == before, "a dry run changed the store or a reflog"
    assert {ref: repo.refs.reflog(ref) for ref in logs} == logs
    assert garbage in dry["removed"], "the dry run kept what only an expiring reflog entry reaches"
    real = gc_json(repo, "--grace", "0")
    assert sorted(real["removed"]) == sorted(dry["removed"])
    assert (real["kept_recent"], real["reachable"]) == (dry["kept_recent"], dry["reachable"])
    assert not repo.store.has(garbage)
    assert all(garbage not in (e.old, e.new) for e in repo.refs.reflog("HEAD"))


def test_a_dry_run_keeps_what_a_young_reflog_entry_reaches(tmp_path):
    """Reflog entries younger than 30 days keep their versions, in the dry run as in the real one."""
    repo = make_repo(tmp_path / "work", packed=True)
    garbage = scratch_version(repo, seed=5)
    dry = gc_json(repo, "-n", "--grace", "0")
    real = gc_json(repo, "--grace", "0")
    assert garbage not in dry["removed"] and dry["removed"] == real["removed"] == []
    assert repo.store.has(garbage)
    assert time.time() - repo.refs.reflog("HEAD")[0].time < DAY
