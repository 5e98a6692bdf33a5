"""A commit is decoded by a one-pass check in the usual case (log reads thousands) and by field-by-field checks
otherwise: both must accept and refuse exactly the same documents, and give the same commit."""

from __future__ import annotations

import itertools

import pytest

from adaptvc.errors import CorruptObjectError
from adaptvc.objects import BasePin, Commit

ID = "0123456789abcdef0123456789abcdef"
VALID = Commit(snapshot=ID, parents=(ID, ID[::-1]), message="v1\n\nbody", author="a <a@b>",
               timestamp="2026-11-25T10:00:00+00:00", base=BasePin("org/m", "main", "f" * 32),
               provenance={"git_commit": "abc", "dirty": False}, metadata={"metrics": {"loss": 0.5}}).to_dict()

VALUES = [None, 0, 1, True, False, 1.5, "", "x", ID, [], [ID], ["x"], {}, {"k": 1}]


class SlowPath(dict):
    """A dict subclass: the one-pass check takes exact dicts only, so this goes field by field."""


def decode(data):
    try:
        return Commit.from_dict(data)
    except CorruptObjectError:
        return "refused"


def both(data) -> tuple[object, object]:
    slow = decode(SlowPath(data)) if isinstance(data, dict) else decode(data)
    return decode(data), slow


def test_a_valid_commit_is_the_same_either_way():
    from adaptvc.objects import _well_formed_commit

    fast, slow = both(VALID)
    assert fast != "refused" and fast == slow and fast.to_dict() == VALID
    assert _well_formed_commit(Commit, VALID) == fast  # the one-pass check takes it (log's path)
    assert _well_formed_commit(Commit, SlowPath(VALID)) is None


@pytest.mark.parametrize("key", [*VALID, "extra"])
def test_every_field_of_every_type_is_judged_the_same_either_way(key):
    for value in [*VALUES, "<missing>"]:
        data = dict(VALID)
        if value == "<missing>":
            data.pop(key, None)
        else:
            data[key] = value
        fast, slow = both(data)
        assert fast == slow, (key, value)


@pytest.mark.parametrize("key", ["name_or_path", "revision", "fingerprint", "local_path", "extra"])
def test_every_base_field_is_judged_the_same_either_way(key):
    for value, nested in itertools.product([*VALUES, "<missing>"], [dict, SlowPath]):
        base = dict(VALID["base"])
        if value == "<missing>":
            base.pop(key, None)
        else:
            base[key] = value
        data = dict(VALID, base=nested(base))
        fast, slow = both(data)
        assert fast == slow, (key, value, nested)


def test_documents_that_are_not_commits_are_refused_either_way():
    for data in (None, [], "commit", 3, {}, dict(VALID, type="snapshot"), dict(VALID, format=2),
                 dict(VALID, format=True), dict(VALID, parents=[ID, 3]), dict(VALID, parents=(ID,))):
        fast, slow = both(data)
        assert fast == slow == "refused", data
