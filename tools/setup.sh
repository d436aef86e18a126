#!/usr/bin/env bash
# One-command, idempotent environment setup: Python venv + deps, npm toolchain, solc, anvil, and
# Debian's chromium for the web app's browser tests.
# Every failure ends in one line that names what is missing; details go to .pm/setup-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
LOGDIR=.pm/setup-logs
mkdir -p "$LOGDIR"

die() { echo "make setup: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
command -v "$PYTHON" >/dev/null 2>&1 || die "Python 3.11 is missing (install python3.11 and python3.11-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "Python 3.11 is required, found $("$PYTHON" --version 2>&1) (set PYTHON=/path/to/python3.11)"
command -v node >/dev/null 2>&1 || die "Node.js is missing (install Node.js 20 or newer)"
command -v npm >/dev/null 2>&1 || die "npm is missing (install it with Node.js 20 or newer)"
node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' \
  || die "Node.js 20 or newer is required, found $(node --version)"

stamp_fresh() {  # stamp_fresh STAMP FILE... : true when STAMP is newer than every FILE
  local stamp=$1; shift
  [ -f "$stamp" ] || return 1
  for file in "$@"; do [ "$file" -nt "$stamp" ] && return 1; done
  return 0
}

if ! stamp_fresh node_modules/.pm-stamp package.json package-lock.json; then
  echo "setup: npm ci (solc-js, OpenZeppelin, anvil)"
  npm ci --no-audit --no-fund >"$LOGDIR/npm.log" 2>&1 \
    || die "npm ci failed: the npm registry is unreachable or package-lock.json is broken (see $LOGDIR/npm.log)"
  touch node_modules/.pm-stamp
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv >"$LOGDIR/venv.log" 2>&1 || die "python -m venv failed: install python3.11-venv (see $LOGDIR/venv.log)"
fi

if ! stamp_fresh .venv/.pm-stamp pyproject.toml constraints.txt; then
  echo "setup: pip install (brownie, torch, hivemind, ...) - a few minutes the first time"
  .venv/bin/python -m pip install --upgrade pip >"$LOGDIR/pip.log" 2>&1 \
    || die "pip could not reach the Python package index (see $LOGDIR/pip.log)"
  .venv/bin/python -m pip install -c constraints.txt -e '.[dev]' >>"$LOGDIR/pip.log" 2>&1 \
    || die "pip install failed: $(grep -E '^ERROR' "$LOGDIR/pip.log" | tail -1) (see $LOGDIR/pip.log)"
  touch .venv/.pm-stamp
fi

[ -f .env ] || : > .env  # brownie-config names .env; an empty one means "no secrets configured"
ANVIL=$(ls node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1)
[ -n "$ANVIL" ] && [ -x "$ANVIL" ] || die "anvil binary missing from node_modules/@foundry-rs (no build for $(uname -sm)?)"
ln -sf "$PWD/$ANVIL" .venv/bin/anvil
# brownie imports a script by the dotted form of its absolute path; a dot in a folder name would
# break `brownie run scripts/deploy.py` without this start-up hook (offchain/brownie_paths.py).
.venv/bin/python -m offchain.brownie_paths >/dev/null || die "could not install the brownie script-path hook"

# The web app's tests drive the system chromium (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: apt-get install chromium (headless browser for the web app's tests)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium; } >"$LOGDIR/apt.log" 2>&1 \
    || die "apt-get install chromium failed: run it as root, or install Chromium yourself (see $LOGDIR/apt.log)"
fi

.venv/bin/python tools/solc/install_solc.py || die "the Solidity compiler could not be installed (see above)"
echo "setup: ready ($(.venv/bin/anvil --version | head -1), $(.venv/bin/python -c 'import torch,hivemind;print("torch",torch.__version__,"hivemind",hivemind.__version__)'))"
