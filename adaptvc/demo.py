"""The demo behind ``adaptvc demo``: the main job, end to end, on a tiny model built here (no downloads).

A tiny Llama gets a LoRA adapter; each "epoch" trains it for a few steps on random tokens, saves it with
``save_pretrained`` and commits it. Then the history is shown, the first version is checked out into a
folder, loaded with plain ``PeftModel.from_pretrained`` and checked to give exactly the outputs the model
gave when that version was saved.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from .errors import AdaptvcError
from .repository import Repository
from .storage.atomic import opened_dir, read_file, remove_tree, write_atomic

#: the file a demo writes first in its folder: a folder holding it may be replaced by the next demo
MARKER = ".adaptvc-demo"
MARKER_TEXT = b"made by 'adaptvc demo'; running the demo again here replaces what it made\n"
#: what a demo makes in its folder (a re-run removes these, and nothing else)
DEMO_ENTRIES = ("adapter", "base-model", "serve-v1", "serve-latest")

TINY_LLAMA = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}


def tiny_base(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain_oneline(commit, labels: list[str]) -> str:
    return f"{commit.id[:12]}{' (' + ', '.join(labels) + ')' if labels else ''} {commit.summary}"


def prepare_folder(root: Path) -> None:
    """Make ``root`` ready for a demo: a new or empty folder, or the folder of a previous demo (it holds the
    marker a demo writes), from which only what that demo made is removed. Anything else is refused: the demo
    never deletes what it did not create."""
    if root.is_symlink():
        raise AdaptvcError(f"{root} is a symbolic link; the demo writes only into a real folder: choose a new one")
    if root.exists() and not root.is_dir():
        raise AdaptvcError(f"{root} is not a folder; choose a new folder for the demo")
    if root.is_dir() and any(os.scandir(root)):
        if read_file(root, MARKER, 4096) != MARKER_TEXT:  # never through a link
            raise AdaptvcError(f"{root} exists and is not empty, and is not the folder of an earlier demo; the "
                               "demo never deletes what it did not create: choose a new or empty folder")
        with opened_dir(root) as dfd:
            for name in DEMO_ENTRIES:
                if os.path.lexists(root / name):
                    remove_tree(dfd, name)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root, MARKER, MARKER_TEXT)


def run_demo(path: str | Path, epochs: int = 3, echo: Callable[[str], None] = print,
             oneline: Callable[..., str] = _plain_oneline) -> None:
    """The demo; ``oneline(commit, labels)`` renders a log line (the CLI passes the one ``log --oneline``
    uses, so what the demo shows is what the command prints)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    root = Path(path)
    prepare_folder(root)
    work = root / "adapter"
    base_dir = root / "base-model"
    echo(f"== adaptvc demo in {root.resolve()}")
    base = tiny_base()
    base.save_pretrained(base_dir)
    echo(f"built a tiny Llama ({sum(p.numel() for p in base.parameters()):,} parameters) in {base_dir}")

    repo = Repository.init(work, base=str(base_dir.resolve()))
    echo(f"adaptvc init {work}")
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    probe = torch.randint(0, TINY_LLAMA["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1))
    expected = {}
    for epoch in range(1, epochs + 1):
        model.train()
        for _ in range(4):
            batch = torch.randint(0, TINY_LLAMA["vocab_size"], (4, 16))
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            expected[epoch] = model(input_ids=probe).logits
        model.save_pretrained(work)
        t = time.perf_counter()
        c = repo.commit(f"epoch {epoch}", metadata={"epoch": epoch, "loss": round(loss.item(), 4)})
        repo.tag(f"v{epoch}")
        echo(f"adaptvc commit -m 'epoch {epoch}'  -> {c.id[:12]} (loss {loss.item():.3f}, "
             f"{(time.perf_counter() - t) * 1000:.0f} ms), tagged v{epoch}")

    echo("\n$ adaptvc log --oneline")
    labels = repo.decorations()
    for c in repo.log():
        echo(oneline(c, labels.get(c.id, [])))

    st = repo.status()
    echo(f"\n$ adaptvc status -> {'clean' if st.clean else 'modified'}")

    last = f"v{epochs}"
    if epochs > 1:
        d = repo.diff("v1", last)
        s = d.summary()
        echo(f"\n$ adaptvc diff v1 {last} -> {s['tensors']['modified']} tensors modified; LoRA ΔW changed by "
             f"{s['delta_w_rel_change_total']:.3f} (relative) over {s['modules']['compared']} modules")
        top = max(d.modules, key=lambda m: m.delta_w_rel_change or 0.0)
        echo(f"  most changed module: {top.name.removeprefix('base_model.model.')} "
             f"(‖ΔW‖ {top.delta_w_norm_a:.3f} → {top.delta_w_norm_b:.3f}, cosine {top.delta_w_cosine:.3f})")

    serve = root / "serve-v1"
    repo.checkout("v1", serve)
    echo(f"\n$ adaptvc checkout v1 -o {serve}")
    v1 = repo.show("v1")
    for f in v1.snapshot.files:
        echo(f"  {f.path:32s} {f.size:>9,} bytes")
    with torch.no_grad():
        loaded = PeftModel.from_pretrained(tiny_base(), serve).eval()
        got = loaded(input_ids=probe).logits
    same = torch.equal(got, expected[1])
    echo(f"PeftModel.from_pretrained(base, {serve.name!r}) reproduces epoch 1's outputs exactly: {same}")
    if not same:
        raise SystemExit("demo failed: the checked-out adapter does not reproduce its outputs")

    from_store = repo.load(tiny_base(), last)  # straight from the store, no folder; base checked against the pin
    with torch.no_grad():
        same2 = torch.equal(from_store(input_ids=probe).logits, expected[epochs])
    echo(f"adaptvc.load(base, repo, rev={last!r}) reproduces epoch {epochs}'s outputs exactly: {same2}")
    if not same2:
        raise SystemExit("demo failed: loading from the store does not reproduce the outputs")

    latest = root / "serve-latest"
    repo.checkout("HEAD", latest)
    identical = _sha256(latest / "adapter_model.safetensors") == _sha256(work / "adapter_model.safetensors")
    echo(f"checkout of HEAD is byte-identical to the saved adapter (sha256): {identical}")
    if not identical:
        raise SystemExit("demo failed: checkout is not byte-identical")
    explore = f"adaptvc -C {work} diff v1 {last} --stat" if epochs > 1 else f"adaptvc -C {work} show v1"
    echo(f"\ndemo finished: every version is in the store, named, and loadable by plain PEFT.\n"
         f"Explore it: adaptvc -C {work} log | {explore}")
