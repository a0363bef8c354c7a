# make setup — .venv with the pinned packages (JAX's CPU build), slacjax editable, GL libraries;
#              on an NVIDIA GPU then: .venv/bin/pip install "jax[cuda12]==0.10.2" (README)
# make run   — set up and train cheetah_run with the protocol's defaults
# make test  — set up, lint, and run the test suite (what CI runs)
# make learning-check — train preset=check on seed 0 (and 1 if 0 does not learn): does it learn?
# make lint  — ruff's checks (pyproject.toml); make test runs it first
# make smoke — set up and run every training phase end to end in a few minutes on a CPU
# make bench — set up and benchmark the fused update step (full size)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run test lint learning-check smoke bench bench-env clean

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

test: setup lint
	$(PY) -m pytest -n 2 --dist loadgroup $(ARGS)

learning-check: setup
	$(PY) -m experiments.learning_check --any-of 2 $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

smoke: setup
	$(PY) -m experiments.run preset=smoke $(ARGS)

bench: setup
	$(PY) -m experiments.bench $(ARGS)

bench-env: setup
	$(PY) -m experiments.bench_env task=cheetah_run $(ARGS)

clean:
	rm -rf $(VENV) .jax_cache
