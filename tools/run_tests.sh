#!/usr/bin/env bash
# Runs every test suite: brownie (contracts on anvil) then pytest (off-chain). Fails if either
# fails, and treats "no tests collected" (pytest exit 5) as a failure: an empty suite proves nothing.
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
brownie test; check "brownie test (contracts)" $? || status=1
python -m pytest -p no:pytest-brownie tests/offchain tests/e2e; check "pytest (off-chain + e2e)" $? || status=1
exit $status
