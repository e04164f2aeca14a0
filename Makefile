# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
DEMO_INDEX ?= demo-index
HOST ?= 127.0.0.1
PORT ?= 8000
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install install-dev chromium

demo: install
	$(PYTHON) -m indexer build data/images --index $(DEMO_INDEX)
	@echo "serving the demo on http://$(HOST):$(PORT)/  (Ctrl+C stops it)"
	$(PYTHON) -m search_api --index $(DEMO_INDEX) --host $(HOST) --port $(PORT)

test: install-dev chromium
	$(PYTHON) -m pytest

install:
	$(PIP) -r requirements.txt

install-dev:
	$(PIP) -r requirements-dev.txt

# The browser tests drive Debian's chromium through Playwright.
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
