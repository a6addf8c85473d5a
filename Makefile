# make demo — install into .venv and run the whole path on the embedded default (SQLite, in-process worker)
# make test — install into .venv, make sure PostgreSQL and Redis answer, run the whole test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test services bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/notifier demo

test: $(STAMP) services
	$(PY) -m pytest

services:
	@bash scripts/services.sh

bench: $(STAMP) services
	$(PY) bench/dispatch.py

clean:
	rm -rf $(VENV) var .pytest_cache
