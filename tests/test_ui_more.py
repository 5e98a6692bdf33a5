"""``adaptvc ui`` beyond test_ui.py, in a real headless Chromium against a real ``adaptvc ui`` process:
picking two versions by shift-clicking points on the metrics chart, the base fingerprint and code provenance on
the version page, and ``--open`` handing the served URL to the browser named by ``$BROWSER``."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adaptvc import Repository
from tests.browser import wait_ready
from tests.light import ENV, write_adapter
from tests.test_ui import ADAPTVC, UiProcess, all_commits, as_float, browser, cells, cli_json, repo_dir, ui  # noqa: F401

pytestmark = pytest.mark.slow


def test_two_points_shift_clicked_on_the_chart_open_the_compare_view_of_exactly_those(ui, browser, repo_dir):  # noqa: F811
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.get(ui.url)
    wait_ready(browser, "history")
    commits = all_commits(repo_dir)
    first = next(c["id"] for c in commits.values() if c["message"] == "epoch 1")
    side = next(c["id"] for c in commits.values() if c["message"] == "exp: higher lr")
    compare = browser.find_element("id", "compare")
    assert not compare.is_enabled()
    for oid in (side, first):
        point = browser.find_element("css selector", f'#metric-chart circle.pt[data-id="{oid}"]')
        ActionChains(browser).key_down(Keys.SHIFT).click(point).key_up(Keys.SHIFT).perform()
    assert urlsplit(browser.current_url).path in ("", "/")  # a shift-click picks, it does not navigate
    ticked = browser.execute_script("return [...document.querySelectorAll('#history .commit')]"
                                    ".filter(r => r.querySelector('input').checked).map(r => r.dataset.id)")
    assert sorted(ticked) == sorted([first, side])
    compare.click()
    wait_ready(browser, "compare")
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query == {"a": [first], "b": [side]}  # older first

    expected = cli_json(repo_dir, "diff", first, side)
    shown = cells(browser)
    assert len(shown) == len(expected["modules"]) == 12
    assert {c["name"]: as_float(c["value"]) for c in shown} == \
        {m["name"]: m["delta_w_rel_change"] for m in expected["modules"]}
    moved = {m["name"] for m in expected["modules"] if m["delta_w_rel_change"]}
    assert moved and all(re.search(r"\.layers\.[23]\.", n) for n in moved)  # exp moved only layers 2 and 3


@pytest.fixture(scope="module")
def provenance_repo(tmp_path_factory) -> Path:
    """A repository inside a git work tree (so commits record the code's git commit), fingerprinting a tiny
    numpy base model that is at hand."""
    root = tmp_path_factory.mktemp("prov")
    code = root / "code"
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(code)], check=True)
    (code / "train.py").write_text("print('train')\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "code"], check=True)
    work = code / "run"
    repo = Repository.init(work)
    write_adapter(work, seed=1)
    lora = load_file(str(work / "adapter_model.safetensors"))
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = {}
    for name, a in lora.items():
        if ".lora_A." in name:
            module = name.split(".lora_A.")[0].removeprefix("base_model.model.")
            out = lora[name.replace(".lora_A.", ".lora_B.")].shape[0]
            weights[f"{module}.weight"] = np.random.default_rng(0).standard_normal((out, a.shape[1])).astype("float32")
    save_file(weights, str(base / "model.safetensors"))
    c = repo.commit("with provenance", base=str(base))
    assert c.base.fingerprint and c.provenance and c.provenance["git_commit"]
    return work


def test_the_version_page_shows_the_fingerprint_and_provenance_of_show_json(provenance_repo, browser):  # noqa: F811
    shown = cli_json(provenance_repo, "show", "HEAD")
    head = subprocess.run(["git", "-C", str(provenance_repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert shown["provenance"]["git_commit"] == head
    server = UiProcess(provenance_repo)
    try:
        browser.get(f"{server.base}/version?rev=HEAD")
        wait_ready(browser, "version")
        facts = browser.execute_script(
            "const out = {}; for (const h of document.querySelectorAll('main h2')) {"
            " const dl = h.nextElementSibling; if (!dl || dl.tagName !== 'DL') continue;"
            " for (const dt of dl.querySelectorAll('dt')) out[h.innerText.trim() + '/' + dt.innerText.trim()] ="
            " dt.nextElementSibling.innerText.trim(); } return out;")
        assert facts.get("Base model/fingerprint") == shown["base"]["fingerprint"], facts
        code = {k.split("/", 1)[1]: v for k, v in facts.items() if k.startswith("Code/")}
        assert code == {k: str(v).lower() if isinstance(v, bool) else str(v)
                        for k, v in shown["provenance"].items()}, code
        assert code["git_commit"] == head
    finally:
        code_, err = server.stop()
        assert code_ == 0, err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_open_hands_the_served_url_to_the_browser(repo_dir, tmp_path, host):  # noqa: F811
    record = tmp_path / "opened"
    script = tmp_path / "fake-browser"
    script.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{record}.tmp" && mv "{record}.tmp" "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**ENV, "BROWSER": str(script)}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen([*ADAPTVC, "-C", str(repo_dir), "ui", "--port", "0", "--host", host, "--open"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
        deadline = time.monotonic() + 20
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record.read_text() == served
        parts = urlsplit(served)
        assert parts.hostname == "127.0.0.1" and parts.port and parts.port != 7007
        if host == "127.0.0.1":
            assert parts.query == ""
        else:
            assert re.fullmatch(r"token=[A-Za-z0-9_-]{20,}", parts.query), served
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert os.path.exists(record)
