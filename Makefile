# conduit-fleet: `make run` starts the whole fleet locally, `make test` runs the test suite,
# `make chaos` runs the full chaos suite, and `make bench` writes docs/benchmarks.md and bench/results.json (BENCH_QUICK=1 for a smoke run).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
RUN_TYPES ?= stream.online:1,channel.update:2,channel.chat.message:1

.PHONY: install run test chaos bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,embedded]'
	touch $@

run: install
	$(VENV)/bin/conduit-fleet dev --channels 1000 --legacy-channels 100 --types $(RUN_TYPES) $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

chaos: install
	CHAOS_FULL=1 $(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
