"""``adaptvc fsck --remote NAME`` through the CLI on a real S3 (moto) and a real Azure Blob (Azurite): a whole
remote exits 0 and says what it verified, ``--json`` gives the report; a blob deleted or overwritten in the
bucket with the plain client library exits 1 and names it."""

from __future__ import annotations

import json
import re

import pytest

from adaptvc.remotes import open_remote
from adaptvc.remotes.buckets import open_bucket
from adaptvc.remotes.objectstore import object_key
from tests.light import ok
from tests.objservers import azure_service, object_remote, s3_service  # noqa: F401 (fixtures)
from tests.test_object_remotes import history, remote  # noqa: F401 (remote: a fixture)

pytestmark = pytest.mark.slow


def fsck(repo, *args):
    from tests.light import cli

    return cli(repo.work_tree, "fsck", "--remote", "origin", *args)


def test_fsck_remote_through_the_cli_says_what_it_verified_and_names_a_bad_object(tmp_path, remote):  # noqa: F811
    repo = history(tmp_path, remote.url, dim=64)  # 3 commits, tags v1..v3
    repo.push(tags=True)

    report = json.loads(ok(fsck(repo, "--json")).stdout)
    assert report == open_remote(remote.url).fsck().to_dict()
    assert report["ok"] is True and report["problems"] == []
    assert report["refs"] == 4 and report["commits"] == 3  # main + 3 tags
    assert report["location"].startswith(f"{remote.service.scheme}://{remote.bucket}/")
    # every object the refs reach: each commit, each snapshot and every distinct blob of the three versions
    blobs = {t.blob for rev in ("v1", "v2", "v3") for f in repo.show(rev).snapshot.files if f.layout
             for t in f.layout.tensors}
    assert report["objects"] >= 6 + len(blobs) and report["bytes_verified"] > 0

    line = ok(fsck(repo)).stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"ok: (\d+) refs, (\d+) commits, (\d+) objects \(.+\) verified", line)
    assert match, line
    assert tuple(map(int, match.groups())) == (report["refs"], report["commits"], report["objects"])

    bucket = open_bucket(remote.url)
    victim = repo.show("HEAD").snapshot.file("adapter_model.safetensors").layout.tensors[0]
    bucket.put(object_key(victim.blob), b"\x00" * victim.size)  # same size, other bytes
    res = fsck(repo)
    assert res.exit_code == 1, res.stdout
    assert f"bad blob {victim.blob}" in res.stdout and "corrupt" in res.stdout
    assert res.stderr.strip() == "Error: 1 problem(s) on the remote"
    assert "not whole" in res.stdout

    gone = repo.show("v1").snapshot.file("adapter_model.safetensors").layout.tensors[1]
    assert gone.blob != victim.blob
    bucket.delete(object_key(gone.blob))
    res = fsck(repo, "--json")
    assert res.exit_code == 1
    bad = json.loads(res.stdout)
    assert bad["ok"] is False
    assert {(p["oid"], p["kind"]) for p in bad["problems"]} == {(victim.blob, "blob"), (gone.blob, "blob")}
    assert [p["problem"] for p in bad["problems"] if p["oid"] == gone.blob] == ["missing"]
    text = fsck(repo)
    assert text.exit_code == 1 and f"bad blob {gone.blob}: missing" in text.stdout
