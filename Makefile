# The two commands a fresh machine needs: `make run` (the service, with a demo account) and
# `make test` (the suite; set BRIDGE_TEST_DATABASE_URL to run it on PostgreSQL).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint screenshots

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

PORT ?= 8000
export BRIDGE_BASE_URL ?= http://127.0.0.1:$(PORT)

run: $(BIN)/.installed
	$(BIN)/idbridge demo
	$(BIN)/idbridge dev-idp register demo
	export BRIDGE_ALLOW_PRIVATE_WEBHOOKS=$${BRIDGE_ALLOW_PRIVATE_WEBHOOKS:-1}; \
	$(BIN)/idbridge dev-idp serve & idp=$$!; $(BIN)/idbridge worker & worker=$$!; \
	trap 'kill $$idp $$worker 2>/dev/null' EXIT; \
	BIND=$${BIND:-127.0.0.1:$(PORT)} $(BIN)/gunicorn --config gunicorn.conf.py "bridge:create_app()"

test: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The console's screenshots (README), taken by the browser suite in a real headless Chromium.
screenshots: $(BIN)/.installed
	BRIDGE_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/browser
