# siamkit: `make demo` (one-shot demo on real data) and `make test` (the test suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The shared dataset mirror beside the repository, when present (CI and developer machines).
MIRROR := $(abspath ../shared/datasets)
export SIAMKIT_MIRROR ?= $(if $(wildcard $(MIRROR)),$(MIRROR),)

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build; an unpinned range could pull a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/siamkit demo --out runs/demo

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not serial"
	$(PY) -m pytest -q -m serial

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/omniglot.py

clean:
	rm -rf $(VENV) runs results
