#!/usr/bin/env bash
# Runs every test suite: the strict docs build, brownie (contracts on anvil) then pytest
# (off-chain, which also checks docs/cli.md against the pm command tree). Fails if any fails, and
# treats "no tests collected" (pytest exit 5) as a failure: an empty suite proves nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

check() {  # check NAME EXIT_CODE
  case $2 in
    0) return 0 ;;
    5) echo "run_tests: $1 collected no tests" >&2; return 1 ;;
    *) echo "run_tests: $1 failed (exit $2)" >&2; return 1 ;;
  esac
}

status=0
# A broken internal link or anchor, or a page missing from mkdocs.yml's nav, fails here. Built into a
# temporary folder so a test run never touches the site/ of `make docs`. Not --quiet: mkdocs 1.6
# then stops counting warnings, and strict mode passes whatever they say.
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$site"; check "mkdocs build --strict (docs)" $? || status=1
rm -rf "$site"
brownie test; check "brownie test (contracts)" $? || status=1
python -m pytest -p no:pytest-brownie --durations=40 tests/offchain tests/e2e; check "pytest (off-chain + e2e)" $? || status=1
exit $status
