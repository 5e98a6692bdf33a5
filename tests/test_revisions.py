"""Revisions: names, ids, prefixes, ~N and ^N."""

from __future__ import annotations

import pytest

from adaptvc import Commit, Repository
from adaptvc.errors import RevisionError
from adaptvc.ops.revisions import parse_revision
from tests import helpers


@pytest.mark.parametrize("rev, expected", [
    ("HEAD", ("HEAD", [])),
    ("v1~2", ("v1", [("~", 2)])),
    ("main^", ("main", [("^", 1)])),
    ("HEAD~^2~", ("HEAD", [("~", 1), ("^", 2), ("~", 1)])),
    ("abcd^0", ("abcd", [("^", 0)])),
])
def test_parse(rev, expected):
    assert parse_revision(rev) == expected


@pytest.mark.parametrize("rev", ["", "~1", "HEAD~x", "HEAD~1234567", "v1^^a", "x" * 2000])
def test_parse_errors(rev):
    with pytest.raises(RevisionError):
        parse_revision(rev)


@pytest.fixture
def history(repo_dir):
    """A repository with four commits c0..c3 on main, tag v1 at c1, branch exp at c2."""
    repo = Repository(repo_dir)
    model = helpers.lora_model()
    ids = []
    for i in range(4):
        helpers.randomize(model, seed=100 + i)
        model.save_pretrained(repo_dir)
        ids.append(repo.commit(f"c{i}").id)
    repo.tag("v1", ids[1])
    repo.branch("exp", ids[2])
    return repo, ids


def test_resolve(history):
    repo, ids = history
    assert repo.resolve("HEAD") == ids[3]
    assert repo.resolve("main") == ids[3]
    assert repo.resolve("refs/heads/main") == ids[3]
    assert repo.resolve("HEAD~1") == ids[2]
    assert repo.resolve("HEAD~3") == ids[0]
    assert repo.resolve("HEAD^") == ids[2]
    assert repo.resolve("HEAD^^") == ids[1]
    assert repo.resolve("HEAD^0") == ids[3]
    assert repo.resolve("v1") == ids[1]
    assert repo.resolve("refs/tags/v1") == ids[1]
    assert repo.resolve("v1~1") == ids[0]
    assert repo.resolve("exp") == ids[2]
    assert repo.resolve(ids[0]) == ids[0]
    assert repo.resolve(ids[0][:8]) == ids[0]
    if len({i[:4] for i in ids}) == 4:  # the shortest prefix works when it is unique
        assert repo.resolve(ids[1][:4]) == ids[1]


@pytest.mark.parametrize("rev, reason", [
    ("HEAD~4", "further than the first commit"),
    ("HEAD^2", "has 1 parent"),
    ("nope", "no tag, branch or commit"),
    ("abc", "no tag, branch or commit"),  # 3 hex digits: too short to be a prefix
    ("f" * 32, "no commit with this id"),
])
def test_resolve_errors(history, rev, reason):
    repo, _ = history
    with pytest.raises(RevisionError, match=reason):
        repo.resolve(rev)


def test_a_blob_id_is_not_a_commit(history):
    repo, _ = history
    snapshot = repo.read_commit("HEAD").snapshot
    with pytest.raises(RevisionError):
        repo.resolve(snapshot)


def test_ambiguous_prefix(history):
    repo, ids = history
    snapshot = repo.read_commit("HEAD").snapshot
    seen: dict[str, Commit] = {}
    i = 0
    while True:  # make commit objects until two share 4 hex digits (about 300 on average)
        c = Commit(snapshot=snapshot, parents=(ids[0],), message=f"m{i}", author="a", timestamp="t")
        if c.id[:4] in seen:
            break
        seen[c.id[:4]] = c
        i += 1
    repo.store.put_commit(c)
    repo.store.put_commit(seen[c.id[:4]])
    with pytest.raises(RevisionError, match="ambiguous"):
        repo.resolve(c.id[:4])
    assert repo.resolve(c.id) == c.id
