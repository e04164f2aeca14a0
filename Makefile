# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
DEMO_INDEX ?= demo-index
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_WORKERS ?= 2  # pytest-xdist processes: most tests wait on a subprocess, a server or a browser part of the time
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint install install-dev chromium

demo: install
	$(PYTHON) -m indexer build data/images --index $(DEMO_INDEX)
	@echo "serving the demo on http://$(HOST):$(PORT)/  (Ctrl+C stops it)"
	$(PYTHON) -m search_api --index $(DEMO_INDEX) --host $(HOST) --port $(PORT)

# Everything: lint and types first (a finding fails the run), then the whole suite on two pytest workers.
test: install-dev chromium
	$(MAKE) --no-print-directory lint
	$(PYTHON) -m pytest -n $(TEST_WORKERS)

# The inner loop: no training-heavy, killing, serving or browser tests (see CONTRIBUTING.md).
test-fast: install-dev
	$(PYTHON) -m pytest -m "not slow and not browser" -n $(TEST_WORKERS)

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

install:
	$(PIP) -r requirements.txt

install-dev:
	$(PIP) -r requirements-dev.txt

# The browser tests drive Debian's chromium through Playwright.
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
