"""`make setup` names what is missing in one line instead of failing somewhere deep inside."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = Path(sys._base_executable).resolve()


def minimal_path(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH holding only the given tools (name -> target), so the rest of the machine is hidden."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, target in tools.items():
        (folder / name).symlink_to(target)
    return str(folder)


def run_setup(path: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": os.environ["HOME"]}
    return subprocess.run(
        [shutil.which("bash"), str(REPO / "tools" / "setup.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def core_tools() -> dict[str, str]:
    return {name: shutil.which(name) for name in ["dirname", "mkdir", "cat"]}


def test_missing_node_is_one_clear_line(tmp_path, core_tools):
    path = minimal_path(tmp_path, {**core_tools, "python3.11": str(BASE_PYTHON)})
    result = run_setup(path)
    assert result.returncode == 1
    assert result.stderr == "make setup: Node.js is missing (install Node.js 20 or newer)\n"


def test_wrong_python_version_is_one_clear_line(tmp_path, core_tools):
    fake_python = tmp_path / "python3.9"
    fake_python.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'Python 3.9.2' && exit 0\nexit 1\n")
    fake_python.chmod(0o755)
    path = minimal_path(tmp_path, {**core_tools, "python3": str(fake_python)})
    result = run_setup(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "make setup: Python 3.11 is required, found Python 3.9.2 (set PYTHON=/path/to/python3.11)"
    ]
