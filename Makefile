# The two commands of the README: `make demo` (the main job) and `make test` (everything).
PYTHON ?= python3

.PHONY: demo test test-secure chaos lint unit integration bench stack-up stack-down bootstrap lock

bootstrap:
	@PYTHON=$(PYTHON) scripts/bootstrap.sh

demo: bootstrap
	$(PYTHON) -m segments.cli demo

# Everything: the suite, then the secured-cluster tests (they start a broker of their own),
# then the chaos test's CI setting (its own three-node cluster; 2-6 minutes). The full
# chaos setting is `make chaos` (docs/reliability.md, "Chaos").
test: bootstrap lint
	$(PYTHON) -m pytest -m "not secure and not chaos"
	$(MAKE) test-secure
	$(MAKE) chaos CHAOS_SCALE=ci

# The pipeline over SASL_SSL with ACLs per service, on a private secured broker and Redis
# (tests/integration/test_secure_stack.py); `make test` runs it too.
test-secure: bootstrap
	$(PYTHON) -m pytest -m secure

# Exactly-once under chaos (tests/chaos/, docs/reliability.md): 100,000 events as signed
# webhooks through the connector, 10 worker kill -9s, 3 broker bounces on a private
# three-node cluster, checked on the output topics and the Redis read model;
# CHAOS_SCALE=ci is the short setting (4-6 minutes). CHAOS_SEED=<seed> replays a run
# (the seed is printed).
CHAOS_SCALE ?= full
chaos: bootstrap
	CHAOS_SCALE=$(CHAOS_SCALE) $(PYTHON) -m pytest -m chaos tests/chaos/ -s

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

# The benchmarks of docs/benchmarks.md, on the local stack (started if needed) or on the
# broker KAFKA_BOOTSTRAP_SERVERS names. `make bench BENCH_ARGS=--quick`: small data.
BENCH_ARGS ?=
bench: bootstrap
	$(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[bench]'
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then $(PYTHON) -m segments.cli stack up; fi
	$(PYTHON) bench/run_all.py $(BENCH_ARGS)

# requirements.lock: every runtime and dev dependency, pinned with hashes, plus the build
# backend (setuptools) for the editable install; scripts/bootstrap.sh, CI and the
# Dockerfile install from it with --require-hashes. Refresh it after changing
# pyproject.toml, and to take new releases: `make lock` (every pin to its newest
# allowed version) or `make lock LOCK_UPGRADE=` (keep pins, add only what is new).
# Run it on Python 3.11, Linux x86_64 (the platform CI and the image use): the markers
# of the lock are resolved for it. pip-tools runs from its own venv under .stack/.
LOCK_VENV ?= .stack/pip-tools
LOCK_UPGRADE ?= --upgrade
lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install -q 'pip-tools>=7.4'; }
	env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile \
		--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links \
		--no-emit-index-url --extra dev --build-deps-for editable $(LOCK_UPGRADE) \
		--output-file requirements.lock pyproject.toml
