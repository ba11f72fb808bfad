# Two commands do all set-up on a fresh machine:
#   make quickstart   creates .venv, installs ecg-tune, runs the quickstart sweep on synthetic data
#   make test         creates .venv, installs ecg-tune with dev extras, runs the default test suite
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel these machines carry; on a GPU
# cluster use e.g. `make quickstart TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv quickstart test test-slow test-all lint bench clean constraints

venv: $(VENV)/.installed

# pyproject.toml declares compatible ranges; constraints.txt pins the exact set the suites ran with.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

quickstart: venv
	$(BIN)/ecg-tune quickstart

# The default suite starts with the static checks: ruff and mypy must stay clean.
test: venv lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The CPU benchmarks that take minutes, each printing its table (bench/README.md lists all of them).
bench: venv
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_sampling.py --part speed
	$(BIN)/python bench/bench_augment.py --threads 1
	$(BIN)/python bench/bench_trainer.py --threads 1

lint: venv
	$(BIN)/ruff check ecg_tune tests bench
	$(BIN)/mypy ecg_tune

# After a deliberate upgrade in .venv (and green suites): pin the tested set again.
constraints: venv
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache quickstart-output
