"""Every long transfer reports progress by the contract (``adaptvc.progress``): one begin with the real total,
updates that add up to what moved, and an end — for commit, checkout, and push/fetch on every remote kind."""

from __future__ import annotations

import pytest

from adaptvc import Repository
from adaptvc.progress import ContractCheck
from tests.light import big_adapter


@pytest.fixture(params=["directory", "hub"])
def remote_url(request, tmp_path):
    if request.param == "directory":
        return str(tmp_path / "remote-store")
    request.getfixturevalue("hub")
    return "hf://alice/progress"


def test_transfers_keep_the_progress_contract(tmp_path, remote_url):
    work = big_adapter(tmp_path / "work", seed=1, mbytes=2)
    repo = Repository.init(work)
    check = ContractCheck()
    repo.commit("v1", progress=check)
    snap = check.task("snapshot")
    assert snap is not None and snap.total > 2_000_000 and snap.done == snap.total

    check = ContractCheck()
    repo.checkout("HEAD", tmp_path / "out", progress=check)
    co = check.task("checkout")
    assert co is not None and co.total == co.done > 2_000_000

    repo.add_remote("origin", remote_url)
    check = ContractCheck()
    pushed = repo.push(progress=check)
    push = check.task("push")
    assert push is not None and push.total > 2_000_000 and push.done == push.total
    assert check.problems() == []

    clone = Repository.clone(remote_url, tmp_path / "clone")
    big_adapter(work, seed=2, mbytes=2)
    repo.commit("v2")
    repo.push()
    check = ContractCheck()
    fetched = clone.fetch(progress=check)
    fetch = check.task("fetch")
    assert fetch is not None and fetch.total > 2_000_000 and fetch.done == fetch.total
    assert check.problems() == []
    assert pushed.bytes > 0 and fetched.bytes > 0


def test_diff_keeps_the_progress_contract_for_every_kind_of_change(tmp_path):
    """The bar of a diff counts exactly the bytes it reads: modified, added, removed, unchanged modules."""
    import json

    from tests.light import write_adapter

    work = write_adapter(tmp_path / "work", seed=1, layers=3)
    repo = Repository.init(work)
    repo.commit("v1")
    write_adapter(work, seed=2, layers=4)  # every tensor changed, one layer added
    cfg = json.loads((work / "adapter_config.json").read_text())
    (work / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": 3}))
    repo.commit("v2")
    for a, b in (("HEAD~1", "HEAD"), ("HEAD", "HEAD~1"), ("HEAD", "HEAD"), ("HEAD~1", None)):
        check = ContractCheck()
        repo.diff(a, b, progress=check)
        task = check.task("diff")
        assert check.problems() == [] and task is not None and task.done == task.total, (a, b, task)
