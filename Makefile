# make setup — .venv with the pinned packages (JAX's CPU build), slacjax editable, GL libraries;
#              on an NVIDIA GPU then: .venv/bin/pip install "jax[cuda12]==0.10.2" (README)
# make run   — set up and train cheetah_run with the protocol's defaults
# make test  — set up and run the test suite (what CI runs)
# make lint  — ruff's checks and format check (pyproject.toml)
# make smoke — set up and run every training phase end to end in a few minutes on a CPU
# make bench — set up and benchmark the fused update step (full size)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run test lint smoke bench bench-env clean

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m experiments.run task=cheetah_run $(ARGS)

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

smoke: setup
	$(PY) -m experiments.run preset=smoke $(ARGS)

bench: setup
	$(PY) -m experiments.bench $(ARGS)

bench-env: setup
	$(PY) -m experiments.bench_env task=cheetah_run $(ARGS)

clean:
	rm -rf $(VENV) .jax_cache
