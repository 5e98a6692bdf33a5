"""Regenerate the screenshots of ``docs/ui.md``: ``python -m bench.ui_screenshots [--out docs/ui]``.

Builds a small fine-tuning run in a temporary folder (a 16-layer LoRA written with numpy, committed epoch by
epoch from a git-tracked training folder, a side branch with a higher learning rate, a merge, tags), serves
it with ``adaptvc ui`` in-process and photographs each page with headless Chromium (``tests/browser.py``:
Debian's chromium and chromium-driver, Selenium; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adaptvc import Repository  # noqa: E402
from tests.browser import chromium, wait_ready  # noqa: E402

LAYERS = 16
MODULES = [("self_attn", m) for m in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
          [("mlp", m) for m in ("gate_proj", "up_proj", "down_proj")]
HIDDEN, RANK = 64, 8
PREFIX = "base_model.model.model.layers"
CONFIG = {"peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK, "lora_dropout": 0.05,
          "target_modules": [m for _, m in MODULES], "base_model_name_or_path": "meta-llama/Llama-3.2-1B",
          "revision": None, "task_type": "CAUSAL_LM"}
#: (eval_loss, train loss) after each epoch of the main run
MAIN = [(2.11, 2.35), (1.62, 1.71), (1.41, 1.44), (1.30, 1.29), (1.24, 1.19), (1.21, 1.12), (1.19, 1.06),
        (1.20, 1.01)]
WIDTH = 1400


def _git(folder: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
           "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, env=env)


def _step(tensors: dict[str, np.ndarray], rng: np.random.Generator, epoch: int, boost: float = 1.0,
          ) -> dict[str, np.ndarray]:
    """One epoch of "training": every layer moves early on; after epoch 2 the first layers settle and the
    last ones (and the MLPs) keep moving."""
    out = {}
    for name, x in tensors.items():
        layer = int(name.split(".layers.")[1].split(".")[0])
        depth = layer / (LAYERS - 1)
        scale = 0.35 * (0.5 + depth) if epoch <= 2 else 0.02 + 0.25 * depth ** 2
        if ".mlp." in name:
            scale *= 1.4
        out[name] = (x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(scale * boost / (1 + epoch / 4)))
    return out


def _write(folder: Path, tensors: dict[str, np.ndarray], **config: object) -> None:
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({**CONFIG, **config}, indent=2))


def build_sample(folder: Path) -> Path:
    """The run the screenshots show, in ``folder/support-bot``."""
    work = folder / "support-bot"
    work.mkdir(parents=True)
    (work / "train.py").write_text("# fine-tune Llama-3.2-1B on support tickets with LoRA\n")
    (work / ".gitignore").write_text(".adaptvc/\nadapter_*\nREADME.md\n")
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "train.py", ".gitignore")
    _git(work, "commit", "-q", "-m", "training script")
    os.environ["ADAPTVC_AUTHOR"] = "Ada Lovelace <ada@example.com>"
    repo = Repository.init(work)
    rng = np.random.default_rng(7)
    tensors = {}
    for i in range(LAYERS):
        for group, module in MODULES:
            p = f"{PREFIX}.{i}.{group}.{module}"
            tensors[f"{p}.lora_A.weight"] = rng.standard_normal((RANK, HIDDEN)).astype(np.float32) * 0.1
            tensors[f"{p}.lora_B.weight"] = rng.standard_normal((HIDDEN, RANK)).astype(np.float32) * 0.1
    branch_point = None
    for epoch, (eval_loss, loss) in enumerate(MAIN, start=1):
        tensors = _step(tensors, rng, epoch)
        _write(work, tensors)
        step = 250 * epoch
        repo.commit(f"epoch {epoch} (step {step})",
                    metadata={"step": step, "epoch": float(epoch), "metrics": {"eval_loss": eval_loss, "loss": loss}})
        if epoch == 2:
            repo.tag("v1")
        if epoch == 7:
            repo.tag("best")
        if epoch == 4:  # a side experiment with a higher learning rate, from here
            branch_point = dict(tensors)
            repo.switch("lr-3e-4", create=True)
            side = branch_point
            for k, (ev, lo) in enumerate([(1.26, 1.15), (1.22, 1.04)], start=1):
                side = _step(side, rng, epoch + k, boost=1.8)
                _write(work, side, lora_dropout=0.1)
                step_side = 250 * (epoch + k)
                repo.commit(f"lr 3e-4: epoch {epoch + k} (step {step_side})",
                            metadata={"step": step_side, "epoch": float(epoch + k),
                                      "metrics": {"eval_loss": ev, "loss": lo}})
            repo.switch("main")
    merged = {n: (tensors[n] + side[n]) / 2 for n in tensors}
    repo.record("merge lr-3e-4: average of both adapters", {
        "adapter_config.json": json.dumps(CONFIG, indent=2).encode(), "adapter_model.safetensors": merged},
        parents=["main", "lr-3e-4"], metadata={"step": 2000, "metrics": {"eval_loss": 1.17}})
    repo.tag("v2")
    repo.checkout("HEAD", force=True)  # the work tree holds what HEAD holds
    return work


def _viewport(driver, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})


def _shoot(driver, url: str, page: str, out: Path, height: int | None = None, before=None) -> None:
    """A picture of the whole page (at most ``height`` pixels tall)."""
    _viewport(driver, 1000)
    driver.get(url)
    wait_ready(driver, page, timeout=120)
    full = driver.execute_script("return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)")
    _viewport(driver, min(height or full, full))
    if before is not None:
        before(driver)
    driver.save_screenshot(str(out))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from adaptvc.ui import make_server

    with tempfile.TemporaryDirectory(prefix="adaptvc-ui-shots-") as tmp:
        work = build_sample(Path(tmp))
        server = make_server(work, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = chromium(WIDTH, 1000, Path(tmp) / "profile")
        base = server.url.rstrip("/")
        try:
            def hover_cell(d):
                from selenium.webdriver import ActionChains

                cell = d.find_element("css selector", f'#heatmap rect.cell[data-name="{PREFIX}.13.mlp.down_proj"]')
                cell.click()
                d.execute_script("window.scrollTo(0, 0)")
                ActionChains(d).move_to_element(cell).perform()

            _shoot(driver, base + "/", "history", args.out / "history.png")
            _shoot(driver, f"{base}/version?rev=best", "version", args.out / "version.png", height=1250)
            _shoot(driver, f"{base}/compare?a=v1&b=best", "compare", args.out / "compare.png", height=1300,
                   before=hover_cell)
            def own_scales(d):
                from selenium.webdriver.support.ui import Select

                Select(d.find_element("id", "scale")).select_by_value("step")

            _shoot(driver, f"{base}/run?to=main", "run", args.out / "run.png", before=own_scales)
        finally:
            driver.quit()
            server.close()


if __name__ == "__main__":
    main()
