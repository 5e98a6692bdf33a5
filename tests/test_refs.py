"""Refs move only by compare-and-swap under a lock, and every move is in the reflog."""

from __future__ import annotations

import pytest

from adaptvc.errors import InvalidRefNameError, RefLockedError, RefMovedError
from adaptvc.refnames import check_ref_name
from adaptvc.storage.disk_refs import DiskRefs as Refs

A, B = "a" * 32, "b" * 32


@pytest.fixture
def refs(tmp_path):
    r = Refs(tmp_path)
    r.init_head("refs/heads/main")
    return r


@pytest.mark.parametrize("name", ["v1", "main", "feature/x", "release-1.0", "exp_2", "a.b", "ü-tag"])
def test_good_names(name):
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", ["", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
                                  "a//b", ".hidden", "a/.b", "x.lock", "a/b.lock", "a.", "@", "a@{1}", "HEAD",
                                  "-rf", "a\x00b", "a\nb", "c" * 32, "x" * 201])
def test_bad_names(name):
    with pytest.raises(InvalidRefNameError):
        check_ref_name(name)


def test_compare_and_swap(refs):
    refs.set_if_equals("refs/heads/main", None, A, "first")
    assert refs.read("refs/heads/main") == A
    assert refs.head_commit() == A
    with pytest.raises(RefMovedError) as e:
        refs.set_if_equals("refs/heads/main", None, B)
    assert e.value.actual == A
    refs.set_if_equals("refs/heads/main", A, B, "second")
    assert refs.read("refs/heads/main") == B
    assert [(e.old, e.new, e.message) for e in refs.reflog("refs/heads/main")] == [
        (A, B, "second"), (None, A, "first")]


def test_lock_file_blocks_a_second_writer(refs, tmp_path):
    (tmp_path / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    lock = tmp_path / "refs" / "heads" / "main.lock"
    lock.write_text("")
    refs.lock_timeout = 0.05
    with pytest.raises(RefLockedError, match="adaptvc unlock"):
        refs.set_if_equals("refs/heads/main", None, A)
    lock.unlink()
    refs.set_if_equals("refs/heads/main", None, A)
    assert not lock.exists()


def test_nested_names_and_delete(refs, tmp_path):
    refs.set_if_equals("refs/heads/team/exp", None, A)
    assert refs.list("refs/heads/") == {"team/exp": A}
    refs.set_if_equals("refs/heads/team/exp", A, None)
    assert refs.list("refs/heads/") == {}
    assert not (tmp_path / "refs" / "heads" / "team").exists()


def test_detached_head(refs):
    refs.set_head(A)
    assert refs.head_target() is None
    assert refs.head_commit() == A
    refs.set_head(B, expected=A)
    with pytest.raises(RefMovedError):
        refs.set_head(A, expected=A)


def test_refs_outside_heads_and_tags_are_refused(refs):
    with pytest.raises(InvalidRefNameError):
        refs.read("refs/../../etc/passwd")
    with pytest.raises(InvalidRefNameError):
        refs.read("refs/heads/../x")
