"""A user's first week (issue 12): numbers that were wrong, refusals that were wrong, and rough edges — each
with real PEFT adapters (AdaLoRA, GPT-2 Conv1D, VeRA, sub-folder adapters, bf16 bases)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, VeraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from adaptvc import Repository
from tests import helpers
from tests.light import ENV, assert_refused, cli, ok, proc, write_adapter


def close(a: float, b: float, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


# -- AdaLoRA: ΔW = B·(A ⊙ E)·α / ranknum ---------------------------------------------------------------------
def adalora_model(seed: int, prune: bool) -> PeftModel:
    config = AdaLoraConfig(init_r=6, target_r=4, lora_alpha=8, total_step=10, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(helpers.tiny_base(), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    if prune:  # what AdaLoRA's rank allocator records after pruning: the ranks each module keeps
        keep = [True, False, True, True, False, True]
        model.peft_config["default"].rank_pattern = {
            f"model.layers.{i}.self_attn.{m}.lora_E": keep for i in range(2) for m in ("q_proj", "v_proj")}
    return model


def test_adalora_module_numbers_match_peft_delta_weights(tmp_path):
    repo = Repository.init(tmp_path / "work")
    loaded = []
    for seed, prune in ((1, False), (2, True)):
        model = adalora_model(seed, prune)
        model.save_pretrained(repo.work_tree)
        repo.commit(f"adalora {seed}")
        out = tmp_path / f"co{seed}"
        repo.checkout("HEAD", out)
        loaded.append(PeftModel.from_pretrained(helpers.tiny_base(), out))  # PEFT resizes by rank_pattern
    result = repo.diff("HEAD~1", "HEAD").to_dict()
    assert len(result["modules"]) == 4
    layers = [{n: m for n, m in lm.named_modules() if hasattr(m, "get_delta_weight")} for lm in loaded]
    for m in result["modules"]:
        with torch.no_grad():
            wa = layers[0][m["name"]].get_delta_weight("default").double().numpy()
            wb = layers[1][m["name"]].get_delta_weight("default").double().numpy()
        assert m["rank_a"] == 6 and m["rank_b"] == 4  # the ranks left after pruning
        assert close(m["delta_w_norm_a"], np.linalg.norm(wa), 1e-5)
        assert close(m["delta_w_norm_b"], np.linalg.norm(wb), 1e-5)
        assert close(m["delta_w_change"], np.linalg.norm(wb - wa), 1e-5)


# -- base checks that refused valid bases ----------------------------------------------------------------
def gpt2_base(tmp_path, dtype=None):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64)).eval()
    path = tmp_path / "gpt2-base"
    model.save_pretrained(path)
    return model, path


def test_gpt2_conv1d_bases_are_accepted(tmp_path):
    base, path = gpt2_base(tmp_path)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    repo = Repository.init(tmp_path / "work")
    peft_model.save_pretrained(repo.work_tree)
    repo.commit("gpt2 lora", base=str(path))
    assert "fingerprint matches" in repo.verify_base("HEAD", str(path))
    torch.manual_seed(0)
    fresh = GPT2LMHeadModel.from_pretrained(path)
    repo.load(fresh, "HEAD")


def test_vera_shared_projections_are_not_taken_for_a_module(tmp_path, base_dir):
    model = get_peft_model(helpers.tiny_base(), VeraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    repo = Repository.init(tmp_path / "work")
    model.save_pretrained(repo.work_tree)
    repo.commit("vera", base=str(base_dir))
    assert "4 adapter modules" in repo.verify_base("HEAD", str(base_dir))
    loaded = repo.load(helpers.tiny_base(), "HEAD")
    repo.checkout("HEAD", tmp_path / "out")
    plain = PeftModel.from_pretrained(helpers.tiny_base(), tmp_path / "out").eval()
    assert torch.equal(helpers.outputs(loaded), helpers.outputs(plain))


def test_a_sub_folder_adapter_is_checked_against_the_pinned_base(tmp_path, base_dir):
    model = helpers.lora_model(seed=1)
    model.add_adapter("second", LoraConfig(r=2, target_modules=["k_proj", "o_proj"]))
    repo = Repository.init(tmp_path / "work")
    model.save_pretrained(repo.work_tree)
    repo.commit("two adapters", base=str(base_dir))
    repo.verify_base("HEAD", str(base_dir), subfolder="second")
    repo.load(helpers.tiny_base(), "HEAD", subfolder="second")


def test_the_same_base_in_bfloat16_is_accepted_a_different_one_is_not(tmp_path, base_dir):
    repo = Repository.init(tmp_path / "work")
    helpers.lora_model(seed=1).save_pretrained(repo.work_tree)
    repo.commit("v1", base=str(base_dir))
    repo.load(helpers.tiny_base().to(torch.bfloat16), "HEAD")
    bf16_dir = tmp_path / "base-bf16"
    helpers.tiny_base().to(torch.bfloat16).save_pretrained(bf16_dir)
    repo.verify_base("HEAD", str(bf16_dir))
    from adaptvc.basemodel import BaseMismatchError

    with pytest.raises(BaseMismatchError, match="values"):
        repo.load(helpers.tiny_base(seed=5), "HEAD")


# -- configs compared by meaning -------------------------------------------------------------------------
def test_target_modules_in_another_order_are_not_a_change(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    first = repo.commit("v1")
    cfg = json.loads((work / "adapter_config.json").read_text())
    cfg["target_modules"] = list(reversed(cfg["target_modules"]))
    (work / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    assert repo.status().clean
    assert "nothing to commit" in cli(work, "commit", "-m", "same").stderr
    assert repo.head() == first.id
    cfg["lora_alpha"] = 99
    (work / "adapter_config.json").write_text(json.dumps(cfg))
    second = repo.commit("alpha changed")
    assert repo.diff(first.id, second.id).config == {"lora_alpha": [8, 99]}


# -- pickle and non-PEFT files ---------------------------------------------------------------------------
def test_status_works_on_an_adapter_committed_from_a_pickle(tmp_path):
    model = helpers.lora_model(seed=1)
    work = tmp_path / "work"
    model.save_pretrained(work, safe_serialization=False)
    Repository.init(work)
    ok(cli(work, "commit", "-m", "from a pickle", "--allow-pickle"))
    res = ok(cli(work, "status"))
    assert "Error" not in res.stderr


def test_a_diffusers_lora_is_described_not_reported_as_clean(tmp_path):
    from safetensors.numpy import save_file

    work = tmp_path / "work"
    work.mkdir()
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora.down.weight": np.zeros((4, 32), np.float32),
               "unet.down_blocks.0.attentions.0.proj_in.lora.up.weight": np.zeros((32, 4), np.float32)},
              str(work / "pytorch_lora_weights.safetensors"))
    Repository.init(work)
    res = cli(work, "status")
    assert "nothing to commit" not in res.stdout + res.stderr
    assert "pytorch_lora_weights.safetensors" in res.stdout + res.stderr
    assert_refused(cli(work, "commit", "-m", "x"), "pytorch_lora_weights.safetensors", "diffusers")


# -- training loop ---------------------------------------------------------------------------------------
def test_a_repository_without_a_work_tree_behaves(tmp_path):
    repo = Repository.init(tmp_path / "runs", work_tree=False)
    for seed in (1, 2):
        repo.commit(f"step {seed}", source=write_adapter(tmp_path / f"ckpt{seed}", seed=seed))
    res = ok(cli(repo.work_tree, "status"))
    assert "removed" not in res.stdout and "no work tree" in res.stdout
    repo.branch("exp", "HEAD~1")
    ok(cli(repo.work_tree, "switch", "exp"))
    assert repo.current_branch() == "exp" and not (repo.work_tree / "adapter_model.safetensors").exists()
    assert_refused(cli(repo.work_tree, "checkout", "main"), "-o")


def test_resume_starts_a_branch_at_the_restored_version(tmp_path):
    repo = Repository.init(tmp_path / "runs", work_tree=False)
    first = repo.commit("step 1", source=write_adapter(tmp_path / "c1", seed=1))
    repo.commit("step 2", source=write_adapter(tmp_path / "c2", seed=2))
    res = ok(cli(repo.work_tree, "resume", first.id[:8], "-o", str(tmp_path / "resume")))
    assert "resume-" in res.stdout
    assert (tmp_path / "resume" / "adapter_model.safetensors").is_file()
    third = repo.commit("step 2 again", source=write_adapter(tmp_path / "c3", seed=3))
    assert third.parents == (first.id,) and repo.current_branch().startswith("resume-")


DDP_SCRIPT = r"""
import sys, torch
from transformers import Trainer, TrainingArguments
from adaptvc.integrations import AdaptvcCallback
from tests import helpers

class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        ids = torch.arange(12) % 128
        return {"input_ids": ids, "labels": ids}

out, repo = sys.argv[1], sys.argv[2]
args = TrainingArguments(out, max_steps=2, save_steps=1, per_device_train_batch_size=2, use_cpu=True,
                         ddp_backend="gloo", report_to=[], logging_steps=1, save_strategy="steps")
trainer = Trainer(model=helpers.lora_model(), args=args, train_dataset=Tokens(),
                  callbacks=[AdaptvcCallback(repo=repo)])
trainer.train()
# tear the process group down before exit: a gloo group left to the interpreter's exit can abort
# ("terminate called without an active exception") while its threads are still joinable
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_commits_once_per_save_and_warns_nowhere(tmp_path):
    """Two real processes under torchrun: the main process versions each save, the other rank stays quiet."""
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous (port 0 is not understood by torchrun)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={port}"]
    res = subprocess.run([*torchrun, str(script), str(tmp_path / "out"), str(tmp_path / "runs")], env=ENV,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "could not commit" not in res.stderr + res.stdout
    assert [c.message for c in Repository(tmp_path / "runs").log()] == ["epoch 1 (step 2)", "epoch 0.5 (step 1)"]


def test_only_the_main_process_commits_under_ddp(tmp_path):
    from types import SimpleNamespace

    from adaptvc.integrations import AdaptvcCallback

    cb = AdaptvcCallback(repo=tmp_path / "runs")
    ckpt = write_adapter(tmp_path / "out" / "checkpoint-1", seed=1)
    args = SimpleNamespace(output_dir=str(ckpt.parent))
    state = SimpleNamespace(global_step=1, epoch=1.0, log_history=[], is_world_process_zero=False)
    cb.on_save(args, state, None)
    assert cb.commits == [] and not (tmp_path / "runs" / ".adaptvc").exists()
    state.is_world_process_zero = True
    cb.on_save(args, state, None)
    assert len(cb.commits) == 1


# -- command line polish ---------------------------------------------------------------------------------
def test_a_closed_pipe_ends_quietly(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1, layers=24)
    Repository.init(work).commit("v1")
    res = subprocess.run(f"{sys.executable} -m adaptvc -C {work} show HEAD | head -2", shell=True, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert res.stderr == "" and len(res.stdout.splitlines()) == 2


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "adaptvc", *args], stdout=follower, stderr=follower,
                         stdin=follower, env={**ENV, **env}, close_fds=True)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=60)
    os.close(leader)
    return out.decode("utf-8", "replace")


def test_colour_and_pager_on_a_terminal(tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work).commit("v1")
    marker = tmp_path / "paged"
    pager = f"{sys.executable} -c \"import sys; open('{marker}', 'w').write(sys.stdin.read())\""
    shown = _run_on_a_terminal(["-C", str(work), "log"], {"ADAPTVC_PAGER": pager})
    assert marker.is_file() and "commit " in marker.read_text() and "\x1b[" in marker.read_text()
    assert "commit " not in shown
    marker.unlink()
    plain = _run_on_a_terminal(["-C", str(work), "--no-pager", "log"], {"NO_COLOR": "1", "ADAPTVC_PAGER": pager})
    assert not marker.exists() and "commit " in plain and "\x1b[" not in plain


def test_sizes_use_one_convention(tmp_path):
    from adaptvc.cli.progress import BarProgress
    from adaptvc.cli.render import human_bytes

    assert human_bytes(319_900_000) == "319.9 MB"
    assert BarProgress.UNIT_DIVISOR == 1000
    import re
    from pathlib import Path

    import adaptvc  # no message a user can see speaks of MiB/GiB while the rest says MB

    root = Path(adaptvc.__file__).parent
    binary = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"\b[KMGT]iB\b", line) and not line.lstrip().startswith("#")
              and not re.search(r"#.*\b[KMGT]iB\b", line)]
    assert binary == []


def test_push_quiet_prints_nothing_from_the_hub_client(hub, tmp_path):
    work = write_adapter(tmp_path / "work", seed=1)
    Repository.init(work).commit("v1")
    ok(cli(work, "remote", "add", "origin", "hf://alice/quiet"))
    env = {k: os.environ[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET") if k in os.environ}
    out = _run_on_a_terminal(["-C", str(work), "push", "-q"], {**env, "HF_HUB_OFFLINE": "0",
                                                              "HF_HUB_DISABLE_PROGRESS_BARS": "0"})
    assert "%|" not in out and "it/s" not in out


def test_the_plot_title_uses_the_names_given(tmp_path):
    pytest.importorskip("matplotlib")
    work = write_adapter(tmp_path / "work", seed=1)
    repo = Repository.init(work)
    repo.commit("v1")
    repo.tag("v1")
    write_adapter(work, seed=2)
    repo.commit("v2")
    from adaptvc.tensors.plot import plot_title

    assert plot_title(repo.diff("v1", "HEAD"), ("v1", "HEAD")).startswith("v1 → HEAD")


def test_huggingface_hub_is_a_core_dependency_imported_lazily():
    from pathlib import Path

    import tomllib

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps["dependencies"]}
    assert {"huggingface_hub", "gitpython"} <= names
    res = proc(None, "--version")
    assert res.returncode == 0
