# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# manage.py, the ASGI app and Celery default to production settings; here we develop.
LOCAL := DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings.local}

.PHONY: run test lint format install migrate superuser clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

# Browser libraries (package.json, exact versions in package-lock.json), served from
# node_modules under /static/vendor/.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

install: $(VENV)/.installed node_modules/.package-lock.json

migrate: install
	$(LOCAL) $(PY) manage.py migrate --noinput

run: migrate
	$(LOCAL) $(PY) -m config.run_local

superuser: migrate
	$(LOCAL) $(PY) manage.py createsuperuser

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy config realtime accounts voice videochat payments messaging
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run --settings=config.settings.test

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint
	@if command -v node >/dev/null; then node --test tests/js/; else echo "node missing: JS unit tests not run"; exit 1; fi
	$(PY) tests/split_run.py $(PYTEST_ARGS)

clean:
	rm -rf var/test-* var/server-*.log
