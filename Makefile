# The two commands of README.md: `make run` and `make test`. Everything else is their plumbing.
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The site's links (SITE_URL, unless set) follow where `make run` serves, in development.
export HOST PORT

.PHONY: run test lint format install migrate demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Development: DEBUG on unless set, so that the built-in development secret is accepted.
migrate: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput

demo: migrate
	DEBUG=$${DEBUG:-1} $(PY) manage.py demo_data

# Serves the console and the gateway on one ASGI server, with the embedded defaults: without
# REDIS_URL the server also runs the periodic jobs that Celery beat runs in production.
run: demo
	DEBUG=$${DEBUG:-1} $(PY) -m uvicorn console.asgi:application --host $(HOST) --port $(PORT) --no-access-log --no-proxy-headers

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Style, the layers (import contracts in pyproject.toml) and the types of billing and the gateway.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m mypy

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache .test-db-*
