# Two commands do all the setup on a machine with python3 and make:
#   make demo   -- create/update .venv, train an SNN on scikit-learn's digits, print its accuracy
#   make test   -- create/update .venv, run lint, type check and the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench bench-venv \
	sync cnn snn_forward es_subset es_parallel mnist_es es_repeat_small es_repeat_big es_norepeat_big

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

# The predecessor's experiments under its Makefile's names, each running our recipe of it
# (README "Predecessor targets"). CIFAR / MNIST name the data (CIFAR-10 as the JPEG tarball or
# the python batches; MNIST as a folder of IDX files), ARGS adds key=value overrides, OUT a run
# folder (default runs/<recipe>-<time>).
CIFAR ?= ../shared/data/cifar10-jpg.tar.gz
MNIST ?=
ARGS ?=
OUT ?=
RUN = $(BIN)/spikeopt run
OUTFLAG = $(if $(OUT),--out $(OUT))
MNISTROOT = $(if $(MNIST),data.root=$(MNIST))

sync: venv

cnn: $(STAMP)
	$(RUN) cifar10-cnn-baseline data.root=$(CIFAR) $(ARGS) $(OUTFLAG)

snn_forward: $(STAMP)
	$(RUN) snn-forward $(ARGS) $(OUTFLAG)

es_subset: $(STAMP)
	$(RUN) cifar10-es-subset data.root=$(CIFAR) $(ARGS) $(OUTFLAG)

es_parallel: $(STAMP)
	$(RUN) cifar10-es-parallel data.root=$(CIFAR) $(ARGS) $(OUTFLAG)

mnist_es: $(STAMP)
	$(RUN) mnist-es $(MNISTROOT) $(ARGS) $(OUTFLAG)

es_repeat_small: $(STAMP)
	$(RUN) cifar10-es-repeat-small data.root=$(CIFAR) $(ARGS) $(OUTFLAG)

es_repeat_big: $(STAMP)
	$(RUN) cifar10-es-repeat-big data.root=$(CIFAR) $(ARGS) $(OUTFLAG)

es_norepeat_big: $(STAMP)
	$(RUN) cifar10-es-norepeat-big data.root=$(CIFAR) $(ARGS) $(OUTFLAG)
