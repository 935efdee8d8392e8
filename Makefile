# The two commands of the README:
#   make book   -- set up (venv + pinned dependencies), execute every notebook at the `cpu` preset, build the HTML book
#   make test   -- set up, lint (ruff check + ruff format --check), unit tests, every notebook at the `smoke` preset
# Everything installs into ./.venv from requirements.txt (Python 3.11).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
STAMP := $(VENV)/.installed

# Datasets: $SAMEDGE_DATA if set; else a sibling ../shared/data copy when present (CI, dev sessions);
# else the library's per-user cache, downloading with checksum verification.
ifeq ($(strip $(SAMEDGE_DATA)),)
ifneq ($(wildcard ../shared/data/PROVENANCE.md),)
export SAMEDGE_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: book test setup lint unit notebooks-test execute html benchmark clean help

help:
	@echo "make book   - build the HTML book into _build/html (executes notebooks at PRESET=$(PRESET))"
	@echo "make test   - lint + unit tests + notebooks at the smoke preset"
	@echo "make benchmark - sharpness-tracking benchmark (CPU, or GPU when present)"

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

unit: $(STAMP)
	$(PY) -m pytest -q -m "not notebooks"

notebooks-test: $(STAMP)
	$(PY) -m pytest -q -m notebooks

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

execute: $(STAMP)
	$(PY) tools/execute_notebooks.py --preset $(PRESET)

html: $(STAMP)
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W --keep-going

book: execute html
	@echo "Book built: file://$(abspath _build/html/index.html)"

benchmark: $(STAMP)
	$(PY) benchmarks/sharpness_benchmark.py

clean:
	rm -rf _build book/chapters
