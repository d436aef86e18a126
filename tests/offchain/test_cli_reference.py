"""docs/cli.md is the `pm` command tree as it is: any change to a command, an option or its help
must come with the regenerated page."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current():
    generated = subprocess.run(
        [sys.executable, "tools/cli_reference.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert generated == committed, "docs/cli.md is out of date with the pm commands: run `make cli-docs`"


def test_cli_reference_names_every_command():
    page = (ROOT / "docs" / "cli.md").read_text()
    for command in ("pm worker run", "pm verifier run", "pm gateway run", "pm infer", "pm claim", "pm demo"):
        assert f"`{command}`" in page
    assert str(ROOT) not in page, "the page must not depend on where the checkout lives"
