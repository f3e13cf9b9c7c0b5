# The two README commands: `make demo` (stack + demo on sample slides) and `make test`.
# Both do every set-up step on a fresh machine: virtualenv, Python packages, server builds.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit servers up down status bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

servers: $(STAMP)
	$(PY) -m infra build

demo: servers
	$(VENV)/bin/slidestream demo

test: servers
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration"

up: servers
	$(VENV)/bin/slidestream up

down: $(STAMP)
	$(VENV)/bin/slidestream down

status: $(STAMP)
	$(VENV)/bin/slidestream status

bench: servers
	$(PY) -m bench

clean:
	-$(VENV)/bin/slidestream down
	rm -rf var out
