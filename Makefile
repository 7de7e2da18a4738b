# `make bench` runs the main job, `make test` the test suite; both create .venv on first use.
PYTHON ?= python3
VENV_PYTHON := .venv/bin/python
ARGS ?=

.PHONY: bench test env

env:
	$(PYTHON) scripts/bootstrap.py

bench: env
	$(VENV_PYTHON) benchmarks/compare_backends.py $(ARGS)

test: env
	$(VENV_PYTHON) -m pytest $(ARGS)
