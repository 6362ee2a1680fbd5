# Two commands do all the setup on a machine with python3 and make:
#   make demo   -- create/update .venv, train an SNN on scikit-learn's digits, print its accuracy
#   make test   -- create/update .venv, run lint, type check and the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench bench-venv

$(STAMP): pyproject.toml requirements-dev.txt requirements-peers-test.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e ".[dev,hf,control,ray,events,nir,report]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-peers-test.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/spikeopt run digits-surrogate

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench-venv:
	test -x .venv-bench/bin/python || $(PY) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -c bench/constraints.txt torch==2.13.0 -r bench/requirements-peers.txt
	.venv-bench/bin/python -m pip install --quiet --no-deps -e .

clean:
	rm -rf $(VENV) .venv-bench runs .pytest_cache .mypy_cache .ruff_cache
