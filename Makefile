# Protocol Models - the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PY := .venv/bin/python
OFFCHAIN_PYTEST := $(PY) -m pytest -p no:pytest-brownie

.PHONY: setup test test-contracts test-offchain demo lint bench constraints clean docs cli-docs

setup:
	@tools/setup.sh

test: setup
	@tools/run_tests.sh

test-contracts: setup
	brownie test

test-offchain: setup
	$(OFFCHAIN_PYTEST) tests/offchain

# make demo ARGS="--rounds 5 --cheater" passes options to pm demo.
demo: setup
	pm demo $(ARGS)

lint: setup
	ruff check offchain tests scripts bench tools
	ruff format --check offchain tests scripts bench tools

# The docs site, built offline and strict into site/ (a broken link or a page missing from the
# nav fails it; make test runs the same build).
docs: setup
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir site

# docs/cli.md from the pm command tree (tests/offchain/test_cli_reference.py checks it is current).
cli-docs: setup
	$(PY) tools/cli_reference.py --write

# Every benchmark (each writes bench/results/<name>.json), then bench/report.py refreshes the
# benchmark-target table in docs/benchmarks.md from those results.
bench: setup
	@for bench in $(filter-out bench/report.py,$(wildcard bench/*.py)); do \
		echo "== $$bench"; $(PY) $$bench || exit 1; done
	$(PY) bench/report.py

constraints:
	$(PY) -m pip download --no-deps -q -d .pm/brownie-wheel "$$(grep -o 'eth-brownie==[0-9.]*' pyproject.toml)"
	unzip -p .pm/brownie-wheel/eth_brownie-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: //p' > .pm/pins.txt
	{ head -3 constraints.txt; cat .pm/pins.txt; } > constraints.txt

clean:
	rm -rf build reports site .pytest_cache .hypothesis .pm
