"""Into the training loop and back out to inference: live models, adaptvc.load, base pinning, the Trainer."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import adaptvc
from adaptvc import Repository
from adaptvc.basemodel import BaseMismatchError, Fingerprint
from adaptvc.cli.main import cli
from adaptvc.errors import AdaptvcError
from adaptvc.integrations import AdaptvcCallback
from tests import helpers


def pinned_model(base_dir, seed: int = 1) -> PeftModel:
    model = helpers.lora_model(seed=seed)
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    return model


# -- 1. committing a live model ----------------------------------------------------------------------------
def test_live_commit_equals_save_pretrained_then_commit(tmp_path):
    model = helpers.lora_model(seed=2)
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"]))
    helpers.randomize(model, seed=5)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    via_folder = Repository.init(tmp_path / "a").commit("x", source=folder)
    live_repo = Repository.init(tmp_path / "b")
    via_model = live_repo.commit("x", source=model)
    assert via_model.snapshot == via_folder.snapshot  # same files, same bytes
    assert list((live_repo.admin_dir / "tmp").iterdir()) == []  # the temporary save is gone

    only_second = live_repo.commit("only second", source=model, adapter_name="second")
    paths = [f.path for f in live_repo.show(only_second.id).snapshot.files]
    assert paths and all(p.startswith("second/") for p in paths)
    with pytest.raises(AdaptvcError, match="no adapter 'third'"):
        live_repo.commit("nope", source=model, adapter_name="third")


# -- 2. loading straight from the store --------------------------------------------------------------------
def test_load_gives_the_outputs_of_a_checkout(tmp_path, base_dir):
    repo = Repository.init(tmp_path / "w")
    model = pinned_model(base_dir, seed=3)
    repo.commit("v1", source=model)
    repo.tag("v1")
    helpers.randomize(model, seed=4)
    repo.commit("v2", source=model)
    expected_v1 = helpers.outputs(PeftModel.from_pretrained(helpers.tiny_base(), repo.checkout("v1", tmp_path / "co")
                                                           and tmp_path / "co").eval())
    loaded = adaptvc.load(helpers.tiny_base(), tmp_path / "w", rev="v1")
    assert isinstance(loaded, PeftModel)
    assert torch.equal(helpers.outputs(loaded), expected_v1)
    assert not any(p.requires_grad for p in loaded.parameters())

    # a second adapter on the same PeftModel
    both = repo.load(loaded, "HEAD", adapter_name="latest")
    both.set_adapter("latest")
    assert torch.equal(helpers.outputs(both), helpers.outputs(model))
    with pytest.raises(AdaptvcError, match="already has an adapter"):
        repo.load(both, "v1", adapter_name="latest")

    trainable = repo.load(helpers.tiny_base(), "v1", is_trainable=True)
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_" in n)


# -- 5. base-model pinning ---------------------------------------------------------------------------------
def test_base_fingerprint_is_pinned_and_checked(tmp_path, base_dir):
    repo = Repository.init(tmp_path / "w")
    c = repo.commit("v1", source=pinned_model(base_dir))
    fp = Fingerprint.parse(c.base.fingerprint)
    assert fp is not None and c.base.name_or_path == str(base_dir)
    assert (repo.admin_dir / "cache" / "base-fingerprints.json").is_file()

    assert "8 adapter modules" not in repo.verify_base("HEAD", str(base_dir))  # 4 modules, all found
    repo.load(helpers.tiny_base(), "HEAD")  # the right base (loaded live) passes

    other_weights = helpers.tiny_base(seed=99)
    with pytest.raises(BaseMismatchError, match="values of the targeted weights differ"):
        repo.load(other_weights, "HEAD")
    assert isinstance(repo.load(other_weights, "HEAD", force=True), PeftModel)

    bigger = LlamaForCausalLM(LlamaConfig(**{**helpers.TINY, "hidden_size": 64, "intermediate_size": 96}))
    with pytest.raises(BaseMismatchError, match="has shape"):
        repo.load(bigger, "HEAD")

    other_dir = tmp_path / "other-base"
    helpers.tiny_base(seed=99).save_pretrained(other_dir)  # (other_weights now carries PEFT layers)
    res = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "verify-base", "HEAD", str(other_dir)])
    assert res.exit_code == 1 and "values of the targeted weights differ" in res.stderr
    assert "--force" not in res.stderr and "check it against that base" in res.stderr  # verify-base has no --force
    res = CliRunner().invoke(cli, ["-C", str(repo.work_tree), "verify-base", "HEAD", str(base_dir)])
    assert res.exit_code == 0 and res.stdout.startswith("ok:")


def test_adapter_whose_modules_match_nothing_is_refused(tmp_path, base_dir):
    folder = tmp_path / "foreign"
    pinned_model(base_dir).save_pretrained(folder)
    weights = folder / "adapter_model.safetensors"
    tensors = {k.replace(".self_attn.", ".attention."): v for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    repo = Repository.init(tmp_path / "w")
    repo.commit("foreign names", source=folder)
    with pytest.raises(BaseMismatchError, match="4 of 4 adapter modules match nothing in the base"):
        repo.verify_base("HEAD", str(base_dir))


def test_portable_name_keeps_the_local_path_and_revisions_apart(tmp_path, base_dir):
    repo = Repository.init(tmp_path / "w", base="org/tiny-llama", base_revision="abc123")
    c = repo.commit("v3", source=pinned_model(base_dir))
    assert (c.base.name_or_path, c.base.revision, c.base.local_path) == ("org/tiny-llama", "abc123", str(base_dir))
    assert c.base.fingerprint  # computed from the local copy
    repo.tag("v3")
    assert repo.read_commit("v3").base.revision == "abc123"  # the adapter's v3 is not the base's revision


def test_base_in_the_hugging_face_cache_is_found(tmp_path, base_dir, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--org--tiny" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in base_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = helpers.lora_model(seed=1)
    model.peft_config["default"].base_model_name_or_path = "org/tiny"
    repo = Repository.init(tmp_path / "w")
    c = repo.commit("cached base", source=model)
    assert c.base.fingerprint and c.base.name_or_path == "org/tiny"
    assert repo.verify_base("HEAD", "org/tiny").startswith("4 adapter modules")


# -- 3. the Trainer callback -------------------------------------------------------------------------------
class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, helpers.TINY["vocab_size"], (n, 16), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def make_trainer(tmp_path, callbacks, epochs=3, model=None, **kw) -> Trainer:
    settings = {"save_strategy": "epoch", "eval_strategy": "epoch", **kw}
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=epochs, per_device_train_batch_size=4,
                             learning_rate=5e-2, logging_steps=1, report_to=[], use_cpu=True, seed=0,
                             disable_tqdm=True, **settings)
    return Trainer(model=model or helpers.lora_model(seed=1), args=args, train_dataset=TokenData(16, 0),
                   eval_dataset=TokenData(8, 1), callbacks=callbacks)


def test_trainer_callback_commits_each_save_and_tags_the_best(tmp_path):
    cb = AdaptvcCallback(repo=tmp_path / "adapter", on="save", tag_best="eval_loss")
    trainer = make_trainer(tmp_path, [cb])
    trainer.train()
    repo = Repository(tmp_path / "adapter")
    log = repo.log()
    assert [c.message for c in reversed(log)] == ["epoch 1 (step 4)", "epoch 2 (step 8)", "epoch 3 (step 12)"]
    for c in log:
        assert set(c.metadata) == {"step", "epoch", "metrics"}
        assert "eval_loss" in c.metadata["metrics"] and "loss" in c.metadata["metrics"]
    best = min(log, key=lambda c: c.metadata["metrics"]["eval_loss"])
    assert repo.tags()["best"] == best.id
    # the committed version is the checkpoint the Trainer saved, byte for byte
    ckpt = tmp_path / "out" / "checkpoint-12" / "adapter_model.safetensors"
    assert repo.show("HEAD").snapshot.file("adapter_model.safetensors").size == ckpt.stat().st_size
    out = tmp_path / "serve"
    repo.checkout("HEAD", out)
    assert helpers.sha256(out / "adapter_model.safetensors") == helpers.sha256(ckpt)
    text = CliRunner().invoke(cli, ["-C", str(tmp_path / "adapter"), "log"]).stdout
    assert "eval_loss" in text and "epoch 3 (step 12)" in text


def test_epoch_mode_commits_after_the_epochs_evaluation(tmp_path):
    cb = AdaptvcCallback(repo=tmp_path / "adapter", on="epoch", tag_best="eval_loss")
    trainer = make_trainer(tmp_path, [cb], epochs=2, save_strategy="no")
    trainer.train()
    log = Repository(tmp_path / "adapter").log()
    assert [c.message for c in reversed(log)] == ["epoch 1 (step 4)", "epoch 2 (step 8)"]
    evals = {e["epoch"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    for c in log:  # each commit carries that epoch's own evaluation
        assert c.metadata["metrics"]["eval_loss"] == pytest.approx(evals[c.metadata["epoch"]], abs=0)


def test_a_failing_callback_never_stops_training(tmp_path, caplog):
    repo = Repository.init(tmp_path / "adapter")
    repo.refs.lock_timeout = 0.01
    lock = repo.admin_dir / "refs" / "heads" / "main.lock"
    lock.write_text(json.dumps({"pid": __import__("os").getpid(), "host": "h", "time": 0}))
    cb = AdaptvcCallback(repo=repo, on="save")
    with caplog.at_level(logging.WARNING, logger="adaptvc"):
        result = make_trainer(tmp_path, [cb], epochs=2).train()
    assert result.global_step == 8
    assert repo.log() == [] and "training goes on" in caplog.text


# -- 4. resuming from a version ----------------------------------------------------------------------------
def test_resume_from_a_committed_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, [], epochs=2)
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-4"
    assert (ckpt / "optimizer.pt").is_file()
    work = tmp_path / "w"
    assert CliRunner().invoke(cli, ["init", str(work)]).exit_code == 0
    res = CliRunner().invoke(cli, ["-C", str(work), "commit", "-m", "ckpt 4", "--from", str(ckpt),
                                   "--with-training-state"])
    assert res.exit_code == 0, res.stderr
    repo = Repository(work)
    paths = {f.path for f in repo.show("HEAD").snapshot.files}
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= paths

    plain = tmp_path / "plain"
    repo.checkout("HEAD", plain)
    assert not (plain / "optimizer.pt").exists()  # inference checkouts stay clean
    restored = tmp_path / "restored"
    res = CliRunner().invoke(cli, ["-C", str(work), "checkout", "HEAD", "-o", str(restored), "--with-training-state"])
    assert res.exit_code == 0, res.stderr
    for name in ("optimizer.pt", "scheduler.pt", "adapter_model.safetensors"):
        assert helpers.sha256(restored / name) == helpers.sha256(ckpt / name)

    resumed = make_trainer(tmp_path / "again", [], epochs=2)
    result = resumed.train(resume_from_checkpoint=str(restored))
    assert result.global_step == 8 and resumed.state.global_step == 8
