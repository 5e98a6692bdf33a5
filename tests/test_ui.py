"""``adaptvc ui``, used as a person would: a real ``adaptvc ui`` process (and the server in-process where the
test must look inside it), a real headless Chromium clicking through the pages, and every number on the page
checked against what ``log --json`` / ``show --json`` / ``diff --json`` print for the same versions.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``; without
them they fail with a message saying so (nothing is skipped).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pytest

from adaptvc import Repository
from adaptvc.objects import BasePin, Commit
from tests.browser import BrowserUnavailable, chromium, wait_ready
from tests.light import ENV, PREFIX, cli

#: ``adaptvc`` with the ui command registered (``setdefault``: a no-op once adaptvc/cli/main.py lists it)
ADAPTVC = [sys.executable, "-c", "import sys; from adaptvc.cli.main import COMMANDS, main; "
                                 "COMMANDS.setdefault('ui', 'ui'); main(sys.argv[1:])"]
KINDS = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
          "base_model_name_or_path": "org/tiny-llama", "task_type": "CAUSAL_LM"}


# -- the repository the tests look at ------------------------------------------------------------------------
def lora(seed: int, layers: int = 4, rank: int = 4, dim: int = 32, keep: dict | None = None,
         moved: set[int] | None = None) -> dict[str, np.ndarray]:
    """LoRA tensors for ``layers`` layers; with ``keep``, only the layers in ``moved`` get new values."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(layers):
        for kind in KINDS:
            p = f"{PREFIX}.{i}.{kind}"
            a = rng.standard_normal((rank, dim)).astype("float32")
            b = rng.standard_normal((dim, rank)).astype("float32")
            if keep is not None and i not in (moved or set()):
                a, b = keep[f"{p}.lora_A.weight"], keep[f"{p}.lora_B.weight"]
            out[f"{p}.lora_A.weight"], out[f"{p}.lora_B.weight"] = a, b
    return out


def files(tensors: dict[str, np.ndarray], **config) -> dict:
    return {"adapter_config.json": json.dumps({**CONFIG, **config}, indent=2).encode(),
            "adapter_model.safetensors": tensors}


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory) -> Path:
    """main: epoch 1 (v1) → 2 → 3 (no metrics, lora_alpha 16) → merge (v2) of exp: one commit off epoch 1."""
    work = tmp_path_factory.mktemp("ui") / "run"
    repo = Repository.init(work)
    t1 = lora(1)
    c1 = repo.record("epoch 1", files(t1), base=BasePin("org/tiny-llama", "main"),
                     metadata={"step": 100, "epoch": 1.0, "metrics": {"eval_loss": 1.9, "loss": 2.3}})
    repo.tag("v1")
    repo.branch("exp")
    t2 = lora(2, keep=t1, moved={0, 1})
    repo.record("epoch 2", files(t2), metadata={"step": 200, "metrics": {"eval_loss": 1.5, "loss": 1.8}})
    t3 = lora(3, keep=t2, moved={1})
    repo.record("epoch 3", files(t3, lora_alpha=16), metadata={"step": 300})
    repo.record("exp: higher lr", files(lora(4, keep=t1, moved={2, 3})), branch="exp",
                metadata={"step": 150, "metrics": {"eval_loss": 1.7}})
    repo.record("merge exp", files(lora(5, keep=t3, moved={2, 3}), lora_alpha=16), parents=["main", "exp"],
                metadata={"step": 400, "metrics": {"eval_loss": 1.2, "loss": 1.4}})
    repo.tag("v2")
    assert c1.id == repo.resolve("v1")
    return work


def cli_json(work: Path, *args: str):
    res = cli(work, *args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def all_commits(work: Path) -> dict[str, dict]:
    return {c["id"]: c for rev in ("main", "exp") for c in cli_json(work, "log", rev)}


# -- a real `adaptvc ui` process -----------------------------------------------------------------------------
class UiProcess:
    def __init__(self, work: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*ADAPTVC, "-C", str(work), "ui", "--port", "0", *args], env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"adaptvc ui printed {line!r}; stderr: {self.proc.stderr.read()}")
        self.first_line = line
        self.url = match.group(1)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.token = parts.query.removeprefix("token=") or None
        self.base = f"http://{parts.netloc}"

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def ui(repo_dir):
    server = UiProcess(repo_dir)
    yield server
    code, err = server.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        driver = chromium(profile=tmp_path_factory.mktemp("chromium"))
    except BrowserUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def http_get(port: int, path: str, host: str = "127.0.0.1", headers: dict | None = None,
             method: str = "GET") -> tuple[int, dict, bytes]:
    """One raw request (the path is sent exactly as given: no client-side normalisation)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", (headers or {}).get("Host", f"127.0.0.1:{port}"))
        for k, v in (headers or {}).items():
            if k != "Host":
                conn.putheader(k, v)
        conn.endheaders()
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def cells(driver, selector: str = "#heatmap rect.cell") -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => Object.assign({}, r.dataset))", selector)


def as_float(text: str) -> float | None:
    return None if text == "" else float(text)


# -- the pages ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_graph_shows_every_commit_tag_and_merge(ui, browser, repo_dir):
    browser.get(ui.url)
    wait_ready(browser, "history")
    expected = all_commits(repo_dir)
    rows = browser.execute_script("return [...document.querySelectorAll('#history .commit')].map(r => r.dataset.id)")
    assert sorted(rows) == sorted(expected) and len(rows) == 5
    badges = browser.execute_script("return [...document.querySelectorAll('#history .ref')].map(b => b.title)")
    assert {"tag: v1", "tag: v2", "HEAD -> main", "exp"} <= set(badges)
    # one node per commit, the merge drawn hollow, and the merge's row sends a line to each of its parents
    nodes = browser.execute_script("return [...document.querySelectorAll('#history circle.node')]"
                                   ".map(c => [c.dataset.id, c.getAttribute('fill')])")
    assert sorted(n for n, _ in nodes) == sorted(expected)
    merge = next(c for c in expected.values() if len(c["parents"]) == 2)
    assert dict(nodes)[merge["id"]] == "#fff"
    graph = json.loads(http_get(ui.port, "/api/history")[2])["graph"]
    merge_row = next(r for r in graph["rows"] if r["id"] == merge["id"])
    assert {e["target"] for e in merge_row["edges"]} == set(merge["parents"])
    for row in browser.find_elements("css selector", "#history .commit"):
        message = expected[row.get_attribute("data-id")]["message"]
        assert message in row.text
    assert "org/tiny-llama" in browser.find_element("css selector", "#history").text


@pytest.mark.slow
def test_the_metrics_chart_has_one_point_per_version_with_the_metric(ui, browser, repo_dir):
    from selenium.webdriver.support.ui import Select

    browser.get(ui.url)
    wait_ready(browser, "history")
    commits = all_commits(repo_dir)
    for metric in ("eval_loss", "loss"):
        Select(browser.find_element("id", "metric")).select_by_value(metric)
        points = browser.execute_script("return [...document.querySelectorAll('#metric-chart circle.pt')]"
                                        ".map(p => [p.dataset.id, +p.dataset.x, +p.dataset.y])")
        want = {c["id"]: (c["metadata"]["step"], c["metadata"]["metrics"][metric]) for c in commits.values()
                if metric in c["metadata"].get("metrics", {})}
        assert len(points) == len(want) == (4 if metric == "eval_loss" else 3)
        assert {p[0]: (p[1], p[2]) for p in points} == want
    # clicking a point opens that version
    Select(browser.find_element("id", "metric")).select_by_value("eval_loss")
    v1 = next(c for c in commits.values() if c["message"] == "epoch 1")
    browser.find_element("css selector", f'#metric-chart circle.pt[data-id="{v1["id"]}"]').click()
    wait_ready(browser, "version")
    assert urlsplit(browser.current_url).path == "/version"
    assert v1["id"][:12] in browser.find_element("tag name", "h1").text


@pytest.mark.slow
def test_two_versions_picked_on_the_graph_give_the_heat_map_of_diff_json(ui, browser, repo_dir):
    browser.get(ui.url)
    wait_ready(browser, "history")
    v1, v2 = (Repository(repo_dir).resolve(t) for t in ("v1", "v2"))
    for oid in (v2, v1):
        browser.find_element("css selector", f'#history .commit[data-id="{oid}"] input').click()
    browser.find_element("id", "compare").click()
    wait_ready(browser, "compare")
    assert urlsplit(browser.current_url).query == f"a={v1}&b={v2}"

    expected = cli_json(repo_dir, "diff", "v1", "v2")
    shown = cells(browser)
    assert len(shown) == len(expected["modules"]) == 12
    assert {c["name"]: as_float(c["value"]) for c in shown} == \
        {m["name"]: m["delta_w_rel_change"] for m in expected["modules"]}
    for c in shown:  # layers across, module kinds down, as `diff --plot`
        layer, kind = re.fullmatch(r".*\.layers\.(\d+)\.(.+)", c["name"]).groups()
        assert (c["layer"], c["kind"]) == (layer, kind)
    assert int(browser.find_element("id", "heatmap").get_attribute("data-cells")) == 12
    # config changes from the same diff
    config_text = browser.find_element("id", "config").text
    assert "lora_alpha" in config_text and "8" in config_text and "16" in config_text
    assert expected["config"] == {"lora_alpha": [8, 16]}

    # hovering shows the numbers; a click drills down to the module's numbers and its tensors
    from selenium.webdriver import ActionChains

    module = max(expected["modules"], key=lambda m: m["delta_w_rel_change"])
    rect = browser.find_element("css selector", f'#heatmap rect.cell[data-name="{module["name"]}"]')
    ActionChains(browser).move_to_element(rect).perform()
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed() and str(module["delta_w_rel_change"]) in tip.text and module["name"] in tip.text
    rect.click()
    drill = browser.find_element("id", "drill")
    assert module["name"] in drill.text
    names = browser.execute_script("return [...document.querySelectorAll('#drill-tensors tbody tr')]"
                                   ".map(r => r.dataset.name)")
    assert sorted(names) == [f"{module['name']}.lora_A.weight", f"{module['name']}.lora_B.weight"]

    # the per-tensor table sorts by any column
    def column(table_id: str) -> list[str]:
        return browser.execute_script(f"return [...document.querySelectorAll('#{table_id} tbody tr')]"
                                      ".map(r => r.dataset.name)")

    by_rel = sorted(expected["tensors"], key=lambda t: -t["rel_delta"] if t["rel_delta"] is not None else math.inf)
    assert column("tensor-diff") == [t["name"] for t in by_rel]
    browser.find_element("css selector", '#tensor-diff th[data-key="name"]').click()
    assert column("tensor-diff") == sorted(t["name"] for t in expected["tensors"])
    browser.find_element("css selector", '#tensor-diff th[data-key="delta_norm"]').click()
    by_delta = sorted(expected["tensors"], key=lambda t: -t["delta_norm"])
    assert column("tensor-diff") == [t["name"] for t in by_delta]


@pytest.mark.slow
def test_across_a_run_each_step_is_the_diff_of_two_consecutive_versions(ui, browser, repo_dir):
    browser.get(f"{ui.base}/run?to=v2")
    wait_ready(browser, "run")
    chain = [c["id"] for c in cli_json(repo_dir, "log", "main")]
    first_parent = []
    oid = Repository(repo_dir).resolve("v2")
    by_id = all_commits(repo_dir)
    while oid:
        first_parent.append(oid)
        oid = (by_id[oid]["parents"] or [None])[0]
    first_parent.reverse()
    assert len(first_parent) == 4 and set(first_parent) <= set(chain)
    shown = cells(browser, "#runmap rect.cell")
    assert len(shown) == 12 * 3
    for step, (a, b) in enumerate(pairwise(first_parent)):
        want = {m["name"]: m["delta_w_rel_change"] for m in cli_json(repo_dir, "diff", a, b)["modules"]}
        got = {c["name"]: as_float(c["value"]) for c in shown if int(c["step"]) == step}
        assert got == want
    # epoch 1 → 2 moved layers 0 and 1 only; epoch 2 → 3 doubled lora_alpha: every ΔW doubled (relative change
    # 1), layer 1 moved besides
    moved = {c["name"] for c in shown if int(c["step"]) == 0 and as_float(c["value"])}
    assert moved == {f"{PREFIX}.{i}.{k}" for i in (0, 1) for k in KINDS}
    doubled = [as_float(c["value"]) for c in shown if int(c["step"]) == 1 and ".layers.1." not in c["name"]]
    assert doubled == pytest.approx([1.0] * 9)
    name = f"{PREFIX}.1.mlp.down_proj"
    rect = browser.find_element("css selector", f'#runmap rect.cell[data-step="1"][data-name="{name}"]')
    rect.click()
    wait_ready(browser, "compare")
    assert f"{PREFIX}.1.mlp.down_proj" in browser.find_element("id", "drill").text


@pytest.mark.slow
def test_a_version_page_shows_what_show_json_says(ui, browser, repo_dir):
    browser.get(f"{ui.base}/version?rev=v2")
    wait_ready(browser, "version")
    shown = cli_json(repo_dir, "show", "v2")
    rows = browser.execute_script("return [...document.querySelectorAll('#tensors tbody tr')]"
                                  ".map(r => [...r.cells].map(c => [c.innerText, c.title]))")
    assert len(rows) == len(shown["tensors"]) == 24
    by_name = {t["name"]: t for t in shown["tensors"]}
    for (name, _), (dtype, _), (shape, _), (size, _), (_, full_hash) in rows:
        t = by_name[name]
        assert (dtype, shape, full_hash) == (t["dtype"], " × ".join(map(str, t["shape"])), t["hash"])
        assert size == f"{t['size']} B"
    files = browser.execute_script("return [...document.querySelectorAll('#files tbody tr')].map(r => r.dataset.name"
                                   " || r.cells[0].innerText)")
    assert sorted(files) == sorted(f["path"] for f in shown["files"])
    text = browser.find_element("tag name", "main").text
    assert '"lora_alpha": 16' in text  # the config
    assert "org/tiny-llama" in text and "merge exp" in text
    snippet = browser.find_element("id", "snippet").text
    assert f"rev='{shown['id']}'" in snippet
    assert "AutoModelForCausalLM.from_pretrained('org/tiny-llama', revision='main')" in snippet
    assert "PeftModel.from_pretrained" in browser.find_element("id", "snippet-peft").text
    for parent in shown["parents"]:
        assert browser.find_element("css selector", f'a[href="/version?rev={parent}"]')


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/version?rev=nope", "/version?rev=v1~9", "/compare?a=v1&b=HEAD%5E3",
                                  "/run?to=no-such-branch", "/version?rev=" + quote("../../.adaptvc/config.json")])
def test_a_bad_revision_in_the_url_gives_an_error_page(ui, browser, path):
    browser.get(ui.base + path)
    wait_ready(browser, "error")
    error = browser.find_element("id", "error").text
    assert "bad revision" in error
    assert "Traceback" not in browser.page_source and "File \"" not in browser.page_source


@pytest.mark.slow
def test_an_error_the_page_script_meets_is_shown_as_an_error(ui, browser):
    browser.get(f"{ui.base}/run?to=v1&from=v2")  # both resolve, but v2 is not before v1
    wait_ready(browser, "error")
    assert "first-parent ancestors" in browser.find_element("id", "error").text


@pytest.mark.slow
def test_hostile_text_in_the_history_is_shown_as_text(tmp_path, browser, server_in_process):
    work = tmp_path / "hostile"
    repo = Repository.init(work)
    evil = '<img src=x onerror="document.body.dataset.owned=1">"\'&'
    repo.record(evil, files(lora(0, layers=1), base_model_name_or_path=evil), base=BasePin(evil, evil),
                metadata={"step": 1, "metrics": {evil: 1.0}, evil: evil})
    repo.tag("t")
    server = server_in_process(work)
    for page, path in (("history", "/"), ("version", "/version?rev=t")):
        browser.get(server.url.rstrip("/") + path)
        wait_ready(browser, page)
        assert browser.execute_script("return document.body.dataset.owned") is None
        assert not browser.find_elements("css selector", "main img")
        assert '<img src=x onerror="document.body.dataset.owned=1">' in browser.find_element("tag name", "main").text


def test_an_empty_repository_has_an_empty_history(tmp_path, server_in_process):
    Repository.init(tmp_path / "empty")
    server = server_in_process(tmp_path / "empty")
    status, _, body = http_get(server.port, "/api/history")
    data = json.loads(body)
    assert status == 200 and data["commits"] == [] and data["head"] is None and data["metrics"] == {}
    status, _, body = http_get(server.port, "/api/version?rev=HEAD")
    assert status == 404 and "no commits yet" in json.loads(body)["error"]


# -- the HTTP surface ---------------------------------------------------------------------------------------
HOSTILE_PATHS = [
    "/static/../.adaptvc/config.json", "/static/%2e%2e/.adaptvc/config.json", "/static/..%2f..%2fetc%2fpasswd",
    "/../../../../etc/passwd", "//etc/passwd", "/.adaptvc/config.json", "/.adaptvc/HEAD", "/adapter_config.json",
    "/static/", "/static/app.js/..", "/static/..\\..\\etc\\passwd", "/static/app.js%00.css", "/api/../../etc/passwd",
    "/api/history/../../.adaptvc/config.json", "/version/../../.adaptvc/config.json", "/static/index.html",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_request_for_a_path_outside_the_store_is_refused(ui, repo_dir, path):
    status, _, body = http_get(ui.port, path)
    assert status in (403, 404), (path, status)
    assert b"peft_type" not in body and b"root:" not in body and b"refs/heads" not in body
    assert b"Traceback" not in body


@pytest.mark.parametrize("query", [
    "rev=" + quote("/etc/passwd"), "rev=" + quote("../../.adaptvc/config.json"), "rev=" + quote(".adaptvc/HEAD"),
    "rev=" + "a" * 5000, "rev=%ff%fe", "rev=v1&rev=v2", "rev=v1&path=/etc/passwd", "rev=",
])
def test_revisions_go_through_the_resolver_and_parameters_are_checked(ui, query):
    status, headers, body = http_get(ui.port, f"/api/version?{query}")
    assert status in (400, 404), (query, status)
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert "\n" not in error and "Traceback" not in error and "peft_type" not in error


def test_the_endpoints_return_what_the_cli_prints_with_json(ui, repo_dir):
    def get(path: str):
        status, headers, body = http_get(ui.port, path)
        assert status == 200 and headers["Content-Type"] == "application/json", body
        return json.loads(body)

    assert get("/api/status") == cli_json(repo_dir, "status")
    assert get("/api/version?rev=v1")["version"] == cli_json(repo_dir, "show", "v1")
    history = get("/api/history")
    assert {c["id"]: c for c in history["commits"]} == all_commits(repo_dir)
    assert [r["id"] for r in history["graph"]["rows"]] == [c["id"] for c in history["commits"]]
    refs = get("/api/refs")
    assert refs["tags"] == {t["name"]: t["id"] for t in cli_json(repo_dir, "tag")}
    assert get("/api/history?max=2")["truncated"] is True and len(get("/api/history?max=2")["commits"]) == 2


def test_the_server_is_read_only_and_answers_only_to_localhost(ui):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = http_get(ui.port, "/api/history", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, body = http_get(ui.port, "/api/history", headers={"Host": f"evil.example:{ui.port}"})
    assert status == 403 and b"localhost" in body  # a page elsewhere cannot reach it by DNS rebinding
    status, headers, body = http_get(ui.port, "/", method="HEAD")
    assert status == 200 and body == b"" and "script-src 'self'" in headers["Content-Security-Policy"]
    for bad in ("/api/history?max=0", "/api/history?max=1e3", "/api/history?max=-1", "/api/run?n=100",
                "/api/history?max=%C2%B2", "/api/history?max=" + "9" * 30, "/api/diff?a=v1", "/api/history?unknown=1",
                "/api/history?" + "&".join(f"max={i}" for i in range(20))):
        status, _, body = http_get(ui.port, bad)
        assert status == 400 and "error" in json.loads(body), bad


@pytest.fixture(scope="module")
def public_ui(repo_dir):
    server = UiProcess(repo_dir, "--host", "0.0.0.0")
    yield server
    code, err = server.stop()
    assert code == 0 and "Traceback" not in err


def test_the_token_is_required_when_bound_elsewhere(public_ui):
    server = public_ui
    out = server.first_line + server.proc.stdout.readline() + server.proc.stdout.readline()
    assert "every request needs this token" in out and f"?token={server.token}" in out
    assert server.token and len(server.token) >= 32, server.first_line
    port, token = server.port, server.token
    for path in ("/", "/api/history", "/static/app.js", f"/api/history?token={token[:-1]}x"):
        status, _, body = http_get(port, path, headers={"Host": f"some-host:{port}"})
        assert status == 403 and b"token" in body, path
    status, headers, _ = http_get(port, f"/?token={token}", headers={"Host": f"some-host:{port}"})
    assert status == 200 and f"={token}" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert http_get(port, "/api/history", headers={"Cookie": cookie})[0] == 200
    assert http_get(port, "/api/history", headers={"Authorization": f"token {token}"})[0] == 200
    assert http_get(port, "/api/history", headers={"Cookie": cookie.replace(token, "x" * len(token))})[0] == 403


@pytest.mark.slow
def test_the_printed_token_url_opens_the_page_in_a_browser(public_ui, browser):
    browser.get(public_ui.url)  # then the page's own requests carry the cookie
    wait_ready(browser, "history")
    assert len(browser.find_elements("css selector", "#history .commit")) == 5
    browser.get(public_ui.url.split("?")[0] + "version?rev=v1")
    wait_ready(browser, "version")


def test_a_busy_port_is_a_one_line_error(ui, repo_dir):
    res = subprocess.run([*ADAPTVC, "-C", str(repo_dir), "ui", "--port", str(ui.port)], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"Error: port {ui.port} on 127.0.0.1 is in use; choose another with --port (0: any free port)"]
    res = subprocess.run([*ADAPTVC, "-C", str(repo_dir), "ui", "--port", "70000"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = subprocess.run([*ADAPTVC, "-C", str(repo_dir), "ui", "--host", "no-such-host.invalid"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.startswith("Error: cannot listen on no-such-host.invalid port 7007")
    assert len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run([*ADAPTVC, "-C", str(repo_dir.parent), "ui"], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and res.stderr.startswith("Error: not an adaptvc repository")


# -- diffs computed once, in the background ----------------------------------------------------------------
@pytest.fixture
def server_in_process(repo_dir):
    from adaptvc.ui import make_server

    servers = []

    def start(path: Path = repo_dir, **kw):
        server = make_server(path, port=0, **kw)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def test_a_diff_is_computed_once_with_progress_and_served_from_the_cache(server_in_process, repo_dir):
    server = server_in_process()
    path = "/api/diff?a=v1&b=v2"
    status, _, body = http_get(server.port, path)
    assert status == 202
    running = json.loads(body)
    assert running["state"] == "running" and set(running["progress"]) == {"done", "total", "queued"}
    status, _, body = http_get(server.port, path + "&wait=60")
    assert status == 200
    done = json.loads(body)
    assert done["diff"] == cli_json(repo_dir, "diff", "v1", "v2")  # exactly `diff --json`
    for _ in range(3):
        assert http_get(server.port, path)[2] == body
    same_ids = f"/api/diff?a={done['diff']['a']}&b={done['diff']['b']}"
    assert http_get(server.port, same_ids)[2] == body
    assert server.jobs.computed == 1


def test_the_diff_cache_is_bounded(repo_dir):
    from adaptvc.ui.jobs import DiffJobs

    repo = Repository(repo_dir)
    ids = [c.id for c in repo.log("main")]
    jobs = DiffJobs(lambda: Repository(repo_dir), max_entries=2)
    try:
        def get(a, b):
            deadline = time.monotonic() + 30
            while (state := jobs.poll(a, b))[0] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert state[0] == "done"
            return state[1]

        first = get(ids[1], ids[0])
        get(ids[2], ids[1])
        assert jobs.cached(ids[1], ids[0]) is first
        get(ids[3], ids[2])  # a third pair pushes out the least recently used one
        assert jobs.cached(ids[1], ids[0]) is None and jobs.computed == 3
        assert get(ids[1], ids[0]).body == first.body and jobs.computed == 4
    finally:
        jobs.close()


# -- at scale -----------------------------------------------------------------------------------------------
def _long_history(work: Path, count: int) -> list[str]:
    """``count`` commits on main (every 50th step a merge of a one-commit side branch, every 100th tagged),
    each with a step and an eval_loss; written with the store's own API and one flush."""
    repo = Repository.init(work)
    first = repo.record("step 0", files(lora(0, layers=1)), metadata={"step": 0, "metrics": {"eval_loss": 3.0}})
    start = datetime.now(timezone.utc) - timedelta(days=10)

    def make(parents: tuple[str, ...], message: str, step: int) -> str:
        commit = Commit(first.snapshot, parents, message, "Test Author <t@example.com>",
                        (start + timedelta(minutes=step)).isoformat(), first.base,
                        metadata={"step": step, "metrics": {"eval_loss": 3.0 / (1 + step / 100)}})
        return repo.store.put_commit(commit)

    ids, prev, i = [first.id], first.id, 0
    while len(ids) < count:
        i += 1
        if i % 50 == 0 and len(ids) <= count - 2:
            side = make((prev,), f"side experiment {i}", 10 * i - 5)
            prev = make((prev, side), f"merge side {i}", 10 * i)
            ids += [side, prev]
        else:
            prev = make((prev,), f"step {i}", 10 * i)
            ids.append(prev)
        if i % 100 == 0:
            repo.store.flush()
            repo.refs.set_if_equals(f"refs/tags/t{i}", None, prev)
    repo.store.flush()
    repo.refs.set_if_equals("refs/heads/main", first.id, prev)
    repo.store.end_session()
    return ids


@pytest.mark.slow
def test_the_history_page_of_1000_commits_renders_in_under_a_second(tmp_path, browser, server_in_process):
    ids = _long_history(tmp_path / "long", 1000)
    assert len(ids) == 1000
    server = server_in_process(tmp_path / "long")
    times = []
    for _ in range(2):  # the first visit reads every commit from disk; the second is what a reload costs
        browser.get(server.url)
        wait_ready(browser, "history")
        times.append(browser.execute_script("return window.adaptvcRendered"))
    rows = browser.execute_script("return document.querySelectorAll('#history .commit').length")
    points = browser.execute_script("return document.querySelectorAll('#metric-chart circle.pt').length")
    assert rows == 1000 and points == 1000
    print(f"\nhistory of 1000 commits: rendered {times[0]:.0f} ms after navigation (first visit), "
          f"{times[1]:.0f} ms (second)")
    assert times[0] < 1000, times


def _big_pair(work: Path) -> None:
    """The benchmark's 320 MB adapter (a 7B Llama's 32 layers × 7 modules, rank 64, bf16) twice: the second
    version redraws every other lora_B, as a later checkpoint does."""
    from bench.adapters import PROFILES, write_adapter

    profile = PROFILES["7b-r64-all-bf16"]
    repo = Repository.init(work)
    first = write_adapter(work, profile, seed=0)
    repo.commit("step 1000", metadata={"step": 1000})
    repo.tag("big1")
    write_adapter(work, profile, seed=1, previous=first, change="half-B")
    repo.commit("step 2000", metadata={"step": 2000})
    repo.tag("big2")
    assert sum(t.size for _, t in repo.show("big1").snapshot.tensors()) == profile.nbytes() == 319_815_680


@pytest.mark.slow
def test_a_320_mb_pair_shows_progress_then_stays_cached(tmp_path, browser, server_in_process):
    _big_pair(tmp_path / "big")
    server = server_in_process(tmp_path / "big")
    compare = server.url.rstrip("/") + "/compare?a=big1&b=big2"
    started = time.monotonic()
    browser.get(compare)
    seen = []
    while browser.execute_script("return document.body.dataset.ready") != "compare":
        assert time.monotonic() - started < 120
        bar = browser.execute_script("const b = document.getElementById('progress-bar');"
                                     "return b && b.hasAttribute('value') ? [b.value, b.max] : null")
        if bar:
            seen.append(tuple(bar))
        time.sleep(0.1)
    first = time.monotonic() - started
    assert any(0 < done < total for done, total in seen), seen  # a real bar, part way
    assert int(browser.find_element("id", "heatmap").get_attribute("data-cells")) == 224
    started = time.monotonic()
    browser.get(compare)
    wait_ready(browser, "compare")
    again = time.monotonic() - started
    print(f"\n320 MB pair: first comparison shown after {first:.1f} s ({len(seen)} progress readings), "
          f"again from the cache after {again:.2f} s")
    assert server.jobs.computed == 1 and again < 2.0
