"""``adaptvc export REV az://CONTAINER/PREFIX`` against a real Azurite, read back with the plain
azure-storage-blob client: every file byte for byte, the record written last (requests counted at a proxy),
a re-export verified and left unchanged, a record adaptvc did not write refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptvc.serving.export import export_to_folder
from adaptvc.serving.layout import RECORD_NAME
from tests.light import assert_refused, big_adapter, ok
from tests.objservers import azure_service, object_remote  # noqa: F401 (fixture)
from tests.test_serving import NAME, _serving_commands, cli, folder_bytes, repo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _container(remote):
    import os

    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    return service.get_container_client(remote.bucket)


def _blob_bytes(container, prefix: str) -> dict[str, bytes]:
    return {b.name[len(prefix):]: container.download_blob(b.name).readall()
            for b in container.list_blobs(name_starts_with=prefix)}


def test_export_to_azure_is_read_back_byte_for_byte_by_a_plain_client(repo, tmp_path, azure_service,  # noqa: F811
                                                                        monkeypatch):
    with object_remote(azure_service, monkeypatch) as remote:
        big_adapter(repo.work_tree, seed=7, mbytes=20)  # more than one block
        repo.commit("big")
        commit = repo.resolve("HEAD")
        url = f"az://{remote.bucket}/serving/lora/"
        prefix = f"serving/lora/{NAME}@{commit[:12]}/"
        remote.proxy.reset()
        res = json.loads(ok(cli(repo.work_tree, "export", "HEAD", url, "--json")).stdout)
        assert res["location"] == f"az://{remote.bucket}/{prefix.rstrip('/')}" and res["written"] is True

        local = export_to_folder(repo.store, repo.read_commit("HEAD"), tmp_path / "srv", NAME)
        container = _container(remote)
        got = _blob_bytes(container, prefix)
        assert set(got) == {"adapter_config.json", "adapter_model.safetensors", RECORD_NAME}
        assert got == folder_bytes(Path(local.location))  # every file and the record, byte for byte
        record = json.loads(got[RECORD_NAME])
        assert record["commit"] == commit

        # the record is the last thing written: no PUT of the export comes after the record's last PUT
        puts = [r.path for r in remote.proxy.requests if r.method == "PUT" and prefix in r.path]
        record_puts = [i for i, p in enumerate(puts) if p.endswith("/" + RECORD_NAME)]
        assert record_puts and record_puts[-1] == len(puts) - 1, puts
        assert {p.rsplit("/", 1)[1] for p in puts} == set(got)

        # a re-export reads back and verifies, writes nothing and changes nothing
        before = {b.name: (b.etag, b.last_modified) for b in container.list_blobs(name_starts_with=prefix)}
        remote.proxy.reset()
        again = json.loads(ok(cli(repo.work_tree, "export", "HEAD", url, "--json")).stdout)
        assert again["written"] is False and again["location"] == res["location"]
        assert not [r for r in remote.proxy.requests if r.method in ("PUT", "DELETE", "POST")]
        assert remote.proxy.received("GET", prefix) > 0  # it did read the export back
        assert {b.name: (b.etag, b.last_modified) for b in container.list_blobs(name_starts_with=prefix)} == before
        assert _blob_bytes(container, prefix) == got

        # a record adaptvc did not write: refused in one line, never replaced, nothing else written
        v3 = repo.resolve("v3")[:12]
        foreign = f"serving/lora/{NAME}@{v3}/{RECORD_NAME}"
        container.upload_blob(foreign, b"[1]")
        assert_refused(cli(repo.work_tree, "export", "v3", url), "not written by adaptvc")
        assert container.download_blob(foreign).readall() == b"[1]"
        assert set(_blob_bytes(container, f"serving/lora/{NAME}@{v3}/")) == {RECORD_NAME}
