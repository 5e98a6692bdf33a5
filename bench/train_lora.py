"""Real consecutive LoRA checkpoints for the compression benchmark: a small Llama (random base weights, built
from a ``LlamaConfig``), PEFT LoRA on every linear layer, trained with AdamW in bf16 on synthetic token data
that has something to learn (a fixed random Markov chain), saved with ``save_pretrained`` every N steps.

``python -m bench.train_lora OUT [--steps 300] [--every 10]`` writes ``OUT/step-000010/adapter_model.safetensors``
and so on; an existing complete run is reused. The checkpoints are what a training run really writes: the
update of AdamW in bf16 moves each weight by a few ulps per step, so consecutive versions share most of their
high bits — unlike the synthetic versions of :mod:`bench.adapters`, which are independent draws.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setup:
    hidden: int = 768
    intermediate: int = 2048
    layers: int = 4
    heads: int = 12
    kv_heads: int = 4
    vocab: int = 2048
    rank: int = 32
    seq: int = 128
    batch: int = 8
    lr: float = 2e-4
    steps: int = 600
    every: int = 10
    seed: int = 0
    #: "bf16": the adapter's weights and AdamW's updates in bf16; "fp32": fp32 master weights (PEFT's default
    #: for a bf16 base), each checkpoint saved in bf16
    master: str = "bf16"


def _batches(setup: Setup):
    """Token sequences from a fixed random Markov chain (each token has 8 likely successors)."""
    import torch

    g = torch.Generator().manual_seed(setup.seed + 1)
    successors = torch.randint(0, setup.vocab, (setup.vocab, 8), generator=g)
    while True:
        x = torch.empty(setup.batch, setup.seq, dtype=torch.long)
        x[:, 0] = torch.randint(0, setup.vocab, (setup.batch,), generator=g)
        for t in range(1, setup.seq):
            pick = torch.randint(0, 8, (setup.batch,), generator=g)
            x[:, t] = successors[x[:, t - 1], pick]
        yield x


def train(out: Path, setup: Setup, log=print) -> list[Path]:
    """Train and save every ``setup.every`` steps into ``out``; the checkpoint folders, in order."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    done = out / "setup.json"
    folders = [out / f"step-{s:06d}" for s in range(setup.every, setup.steps + 1, setup.every)]
    if done.exists() and json.loads(done.read_text()) == asdict(setup) and all(
            (f / "adapter_model.safetensors").exists() for f in folders):
        return folders
    torch.manual_seed(setup.seed)
    torch.set_num_threads(2)
    config = LlamaConfig(vocab_size=setup.vocab, hidden_size=setup.hidden, intermediate_size=setup.intermediate,
                         num_hidden_layers=setup.layers, num_attention_heads=setup.heads,
                         num_key_value_heads=setup.kv_heads, max_position_embeddings=setup.seq)
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    lora = LoraConfig(r=setup.rank, lora_alpha=2 * setup.rank, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, lora, autocast_adapter_dtype=setup.master == "fp32")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=setup.lr, weight_decay=0.01)
    data = _batches(setup)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for step in range(1, setup.steps + 1):
        x = next(data)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % setup.every == 0:
            state = None
            if setup.master == "fp32":
                from peft import get_peft_model_state_dict

                state = {k: v.to(torch.bfloat16) for k, v in get_peft_model_state_dict(model).items()}
            model.save_pretrained(out / f"step-{step:06d}", state_dict=state)
            log(f"step {step} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    done.write_text(json.dumps(asdict(setup)))
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    for name, default in asdict(Setup()).items():
        ap.add_argument(f"--{name}", type=type(default), default=default)
    args = vars(ap.parse_args())
    out = args.pop("out")
    train(out, Setup(**args), log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
