# troupe: the two commands are `make run` and `make test`; both install into .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_LOCAL := $(VENV)/.troupe-local
STAMP_DEV := $(VENV)/.troupe-dev
GOAL ?= What is 17 * 23 + 4? Compute it and give the number.
# llama-cpp-python builds from source; let cmake use both cores.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# Bundled models load from site-packages; never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint typecheck pytest install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# CPU torch first, from its pinned version, so nothing pulls the CUDA build.
$(STAMP_LOCAL): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

$(STAMP_DEV): pyproject.toml $(STAMP_LOCAL)
	$(BIN)/pip install --quiet -e '.[local,dev]'
	touch $@

install: $(STAMP_LOCAL)
install-dev: $(STAMP_DEV)

run: $(STAMP_LOCAL)
	$(BIN)/troupe run "$(GOAL)"

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; make treats any non-zero exit as failure.
pytest: $(STAMP_DEV)
	$(BIN)/pytest

test: lint typecheck pytest

# Each benchmark prints one JSON object as its last line; run them on a quiet machine.
bench: $(STAMP_DEV)
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/durability.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
