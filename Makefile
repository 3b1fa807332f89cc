# The two commands of the README: `make demo` (the main job) and `make test` (everything).
PYTHON ?= python3

.PHONY: demo test lint unit integration bench stack-up stack-down bootstrap

bootstrap:
	@PYTHON=$(PYTHON) scripts/bootstrap.sh

demo: bootstrap
	$(PYTHON) -m segments.cli demo

test: bootstrap lint
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

unit: bootstrap
	$(PYTHON) -m pytest -m unit

integration: bootstrap
	$(PYTHON) -m pytest -m "integration or reliability"

stack-up: bootstrap
	$(PYTHON) -m segments.cli stack up

stack-down:
	$(PYTHON) -m segments.cli stack down
