# The two README commands: `make demo` (stack + demo on sample slides) and `make test`.
# Both do every set-up step on a fresh machine: virtualenv, Python packages, server builds.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

WEB := viewer/web
WEB_STAMP := $(WEB)/node_modules/.installed

.PHONY: demo test test-unit test-run lint servers browser up down status bench clean

$(STAMP): pyproject.toml
	bash infra/ensure-tools.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# OpenSeadragon from npm, served by the viewer (no CDN).
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund
	touch $@

servers: $(STAMP) $(WEB_STAMP)
	$(PY) -m infra build

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	bash infra/ensure-browser.sh

demo: servers
	$(VENV)/bin/slidestream demo

# Static checks first (seconds), then the suite against the real servers.
test: servers browser
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when a selection holds no test; a subset run (PYTEST_ARGS) is not a failure then.

test-unit: $(STAMP)
	$(MAKE) --no-print-directory test-run PYTEST_ARGS='-m "not integration" $(PYTEST_ARGS)'

test-run:
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; rc=0; fi; exit $$rc

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
