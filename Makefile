# The two commands of the README. Everything installs into .venv; nothing else is needed for `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev lint services

# The Python client (client/, its own package with the `locus` command) goes in editable, so the portal's
# workers and tests use the checkout's copy; setuptools comes with the requirements (torch needs it).
$(VENV)/.installed: requirements.txt client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e ./client
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Embedded default: SQLite, file-system broker, local media, console email. Ctrl-C stops everything.
demo: install
	$(PY) manage.py demo $(DEMO_ARGS)

## The whole test suite against real PostgreSQL, Redis, worker processes, S3 API and SMTP servers.
test: install-dev
	bash .ci/services.sh
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py registry check
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(PY) -m ruff check .
