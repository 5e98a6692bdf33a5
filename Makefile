# The two commands of the README: `make demo` and `make test`. Each sets up everything it needs on a
# fresh machine (a virtual environment in .venv with the CPU build of torch and the pinned test deps).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adaptvc-installed
# The CPU wheel of torch; users may install any torch they like, tests and CI pin this one.
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast lint bench ui-screenshots clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adaptvc demo build/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The fast tier: every test that needs no torch, starts no server (Hub, moto, Azurite) and kills nothing
# (SIGKILL runs and timed races are marked slow), on both cores (pytest-xdist).
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --fast -n 2

# The benchmark also runs git-lfs (Debian) and DVC (PyPI, in its own venv) when they can be installed.
bench: $(STAMP)
	command -v git-lfs >/dev/null || ((apt-get update -qq && apt-get install -y -qq git-lfs) >/dev/null 2>&1 || true)
	test -x .venv-bench/bin/dvc || ($(PYTHON) -m venv .venv-bench && .venv-bench/bin/pip install -q dvc) || true
	$(BIN)/python -m bench --compare --object-storage 4 --train-real 600 --dvc .venv-bench/bin/dvc $(BENCH_ARGS)

# The screenshots of docs/ui.md, taken with headless chromium (apt-get install chromium chromium-driver).
ui-screenshots: $(STAMP)
	$(BIN)/python -m bench.ui_screenshots

lint: $(STAMP)
	$(BIN)/ruff check adaptvc tests bench

clean:
	rm -rf $(VENV) build .pytest_cache
