# voxguard: `make run` serves, `make test` tests; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_WEIGHTS := $(abspath ../shared/aasist)
# Tests read the official weights from ../shared when present (CI), else from checkpoints/.
export VOXGUARD_CHECKPOINT_DIR ?= $(if $(wildcard $(SHARED_WEIGHTS)/AASIST.pth),$(SHARED_WEIGHTS),$(abspath checkpoints))

.PHONY: install test test-fast lint format weights run serve certs bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

weights: install
	$(VENV)/bin/voxguard weights --dir checkpoints

bench: install
	$(VENV)/bin/voxguard bench model --batch-sizes 1,16 --repeat 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
