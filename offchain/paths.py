"""Where the repository keeps what the off-chain code reads (kept import-light for `pm --help`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO / "build"
DEPLOYMENTS_DIR = REPO / "deployments"
