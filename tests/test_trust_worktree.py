"""The trust boundary, part 1: the work tree and the command line are hostile until checked.

Each test names the hostile input it feeds; each expects a one-line refusal (exit 1) or the documented safe
behaviour, and proves that nothing outside the repository (or inside the store) changed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from adaptvc import Repository
from adaptvc.errors import AdaptvcError
from tests.light import (
    ENV,
    assert_refused,
    cli,
    digest,
    nested_json,
    ok,
    peak_rss,
    proc,
    write_adapter,
)


@pytest.fixture
def work(tmp_path) -> Path:
    w = write_adapter(tmp_path / "work", seed=1)
    Repository.init(w)
    return w


@pytest.fixture
def committed(work) -> Path:
    ok(cli(work, "commit", "-m", "v1"))
    return work


# -- symbolic links in the work tree ---------------------------------------------------------------------
def test_a_symlinked_companion_file_is_refused_and_never_read(committed, tmp_path):
    """README.md -> /proc/self/environ would put the user's HF_TOKEN in the store (and a push would publish it)."""
    (committed / "README.md").symlink_to("/proc/self/environ")
    before = digest(committed / ".adaptvc")
    res = proc(committed, "commit", "-m", "leak", env={"HF_TOKEN": "hf_SECRET_do_not_store"})
    assert_refused(res, "README.md", "symbolic link")
    assert digest(committed / ".adaptvc") == before
    stored = b"".join(p.read_bytes() for p in (committed / ".adaptvc").rglob("*") if p.is_file())
    assert b"hf_SECRET_do_not_store" not in stored


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_symlinked_adapter_files_are_refused(tmp_path, name):
    real = write_adapter(tmp_path / "real", seed=2)
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work)
    (work / name).unlink()
    (work / name).symlink_to(real / name)
    assert_refused(cli(work, "commit", "-m", "x"), name, "symbolic link")
    assert_refused(cli(work, "status"), name, "symbolic link")


def test_a_symlinked_sub_folder_adapter_is_refused(committed, tmp_path):
    elsewhere = write_adapter(tmp_path / "elsewhere", seed=3)
    (committed / "second").symlink_to(elsewhere, target_is_directory=True)
    assert_refused(cli(committed, "commit", "-m", "x"), "second", "symbolic link")


def test_checkout_never_writes_through_a_symlinked_sub_folder(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    write_adapter(work / "second", seed=2)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "with a sub-adapter"))
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (work / "second").iterdir():
        p.unlink()
    (work / "second").rmdir()
    (work / "second").symlink_to(outside, target_is_directory=True)
    res = cli(work, "checkout", "-f", "HEAD")
    assert_refused(res, "second", "symbolic link")
    assert list(outside.iterdir()) == []


def test_checkout_o_never_writes_through_a_symlink_inside_the_target(committed, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    serve = tmp_path / "serve"
    serve.mkdir()
    (serve / "adapter_model.safetensors").symlink_to(outside / "victim")
    res = cli(committed, "checkout", "HEAD", "-o", str(serve), "-f")
    assert_refused(res, "adapter_model.safetensors")
    assert list(outside.iterdir()) == []


# -- hostile file contents -------------------------------------------------------------------------------
def _rewrite_header(path: Path, edit) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = edit(data[8:8 + n].decode())
    raw = header.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def test_a_tensor_name_with_a_lone_surrogate_is_refused_before_anything_is_stored(committed):
    weights = committed / "adapter_model.safetensors"
    _rewrite_header(weights, lambda h: h.replace("layers.0.self_attn.q_proj.lora_A", "layers.0.\\ud800.lora_A", 1))
    before = digest(committed / ".adaptvc")
    assert_refused(cli(committed, "commit", "-m", "x"), "adapter_model.safetensors")
    assert digest(committed / ".adaptvc") == before


def test_a_deeply_nested_adapter_config_is_refused_in_one_line(committed):
    (committed / "adapter_config.json").write_text('{"peft_type": "LORA", "x": ' + nested_json(100_000) + "}")
    before = digest(committed / ".adaptvc")
    assert_refused(proc(committed, "commit", "-m", "x"), "adapter_config.json")
    assert_refused(proc(committed, "status"), "adapter_config.json")
    assert digest(committed / ".adaptvc") == before


def test_a_huge_adapter_config_is_refused_before_it_is_read(committed):
    """600 MB of config (a sparse file): refused by its size, never parsed (it took 1.8 GB of memory)."""
    config = committed / "adapter_config.json"
    with open(config, "r+b") as f:
        f.truncate(600 << 20)
    peak, code, err = peak_rss(committed, "commit", "-m", "x")
    assert code == 1 and err.startswith("Error: ") and "adapter_config.json" in err and len(err.splitlines()) == 1
    assert peak < 120, peak


def test_a_fifo_in_the_work_tree_does_not_hang_anything(committed):
    os.mkfifo(committed / "README.md")
    res = proc(committed, "status", timeout=30)
    assert res.returncode == 0, res.stderr


def _without_root_powers() -> None:
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file permissions apply even to root."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_sub_folder_does_not_stop_commit_or_status(committed):
    private = committed / "private-logs"
    private.mkdir()
    (private / "x.txt").write_text("secret")
    private.chmod(0)
    try:
        for args in (["commit", "--allow-empty", "-m", "v2"], ["status"]):
            res = proc(committed, *args, preexec_fn=_without_root_powers)
            assert res.returncode == 0, res.stderr
        assert b"nothing to commit" in res.stdout
    finally:
        private.chmod(0o755)


# -- the command line and the environment --------------------------------------------------------------
@pytest.mark.parametrize("args", [
    [b"tag", b"v\xff1"],
    [b"branch", b"exp\xfe"],
    [b"commit", b"--allow-empty", b"-m", b"epoch \xff"],
    [b"show", b"HEAD\xff"],
    [b"remote", b"add", b"orig\xffin", b"/tmp/x"],
    [b"commit", b"--allow-empty", b"-m", b"x", b"--meta", b"key=\xff"],
    [b"checkout", b"v\xc3", b"-o", b"out"],
], ids=["tag", "branch", "message", "revision", "remote-name", "meta", "checkout-rev"])
def test_non_utf8_arguments_are_refused_in_one_line(committed, args):
    before = digest(committed / ".adaptvc")
    assert_refused(proc(committed, *args), "UTF-8")
    assert digest(committed / ".adaptvc") == before


def test_a_non_utf8_author_from_the_environment_is_refused(committed):
    env = {**ENV, "ADAPTVC_AUTHOR": "caf\udcff"}
    before = digest(committed / ".adaptvc")
    res = subprocess.run([sys.executable, "-m", "adaptvc", "-C", str(committed), "commit", "--allow-empty",
                          "-m", "x"], env={k: v.encode("utf-8", "surrogateescape") for k, v in env.items()},
                         capture_output=True, timeout=60)
    assert_refused(res, "ADAPTVC_AUTHOR")
    assert digest(committed / ".adaptvc") == before


def test_deeply_nested_metadata_is_refused(committed):
    before = digest(committed / ".adaptvc")
    assert_refused(proc(committed, "commit", "--allow-empty", "-m", "x", "--meta", "k=" + nested_json(50_000)),
                   "--meta")
    assert digest(committed / ".adaptvc") == before


def test_the_python_api_refuses_text_that_is_not_unicode(committed):
    repo = Repository(committed)
    before = digest(committed / ".adaptvc")
    for kwargs in ({"message": "bad \ud800"}, {"message": "ok", "author": "\udcff"},
                   {"message": "ok", "metadata": {"k": "\ud800"}}):
        with pytest.raises(AdaptvcError):
            repo.commit(allow_empty=True, **kwargs)
    assert digest(committed / ".adaptvc") == before


@pytest.mark.parametrize("target", [".adaptvc", ".adaptvc/objects", "sub/../.adaptvc"])
def test_checkout_into_the_store_folder_is_refused(committed, target):
    before = digest(committed / ".adaptvc")
    assert_refused(cli(committed, "checkout", "HEAD", "-o", target, "-f"), ".adaptvc")
    assert digest(committed / ".adaptvc") == before


def test_a_remote_url_with_an_unknown_scheme_is_refused(committed):
    assert_refused(cli(committed, "remote", "add", "x", "gopher://host/path"), "gopher://")
    assert json.loads((committed / ".adaptvc" / "config.json").read_text())["remotes"] == {}


def test_a_revision_of_a_megabyte_is_refused_quickly(committed):
    assert_refused(cli(committed, "show", "v" * (1 << 20)), "too long")


def test_resource_limits_are_reported_in_one_line(committed):
    """A file-size limit hit while writing objects: one line, and nothing half-written is recorded."""
    write_adapter(committed, seed=9, dim=512, rank=64)
    before = digest(committed / ".adaptvc")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    res = subprocess.run([sys.executable, "-m", "adaptvc", "-C", str(committed), "commit", "-m", "big"], env=ENV,
                         capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert_refused(res)
    after = digest(committed / ".adaptvc")
    assert {k: v for k, v in after.items() if not k.startswith(("objects", "tmp"))} == \
        {k: v for k, v in before.items() if not k.startswith(("objects", "tmp"))}


@pytest.mark.parametrize("raw_name", [b"x\xff", b"a\nb", b"tab\there"], ids=["not-utf8", "newline", "tab"])
def test_an_adapter_sub_folder_whose_name_cannot_be_stored_is_named_by_status_and_commit(tmp_path, raw_name):
    """status listed a non-UTF-8 sub-folder as added and commit then failed without naming it; a name with a
    newline was silently left out. Both commands now say the same thing, in one line, naming the folder."""
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work).commit("v1")
    write_adapter(Path(os.fsdecode(os.path.join(os.fsencode(work), raw_name))), seed=2)
    for args in (["status"], ["commit", "-m", "v2"]):
        assert_refused(proc(work, *args), f"sub-folder {repr(raw_name)[1:]}: holds an adapter", "rename it")
    assert len(Repository(work).log()) == 1
    pattern = "".join(chr(c) if 32 < c < 127 else "?" for c in raw_name)
    (work / ".adaptvcignore").write_text(pattern + "/\n")
    ok(proc(work, "status"))  # ignored on purpose: then it is simply left out
