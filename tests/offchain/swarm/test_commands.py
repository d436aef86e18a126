"""`pm worker run` / `pm driver run` refuse bad input with one line and a non-zero exit."""

import subprocess
import sys

from offchain.swarm.local import ROOT

PM = [sys.executable, "-m", "offchain.cli"]
TINY = str(ROOT / "specs" / "tiny.json")


def run_pm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PM, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 1
    assert text in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_stage_out_of_range():
    result = run_pm("worker", "run", "--model-spec", TINY, "--stage", "5")
    assert_one_line_error(result, "stage 5 out of range")


def test_missing_spec_file():
    result = run_pm("worker", "run", "--model-spec", "no-such-spec.json", "--stage", "0")
    assert_one_line_error(result, "model spec no-such-spec.json not found")


def test_driver_needs_initial_peers():
    result = run_pm("driver", "run", "--model-spec", TINY)
    assert_one_line_error(result, "needs --initial-peers")


def test_unparsable_listen_address():
    result = run_pm("worker", "run", "--model-spec", TINY, "--stage", "0", "--host-maddrs", "garbage")
    assert_one_line_error(result, "cannot join the swarm")
