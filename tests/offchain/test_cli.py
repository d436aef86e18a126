"""`pm` lists every planned command and refuses, loudly, to fake the ones not built yet."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PM = [sys.executable, "-m", "offchain.cli"]


def run_pm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PM, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_role():
    result = run_pm("--help")
    assert result.returncode == 0
    roles = [
        "model",
        "worker",
        "driver",
        "verifier",
        "gateway",
        "store",
        "data",
        "infer",
        "claim",
        "balance",
        "demo",
    ]
    for command in roles:
        assert command in result.stdout


def test_a_missing_required_option_is_named_without_a_traceback():
    result = run_pm("gateway", "run")
    assert result.returncode == 2
    assert "Missing option '--model'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_refuses_an_out_folder_it_did_not_write(tmp_path):
    """pm demo replaces its own previous --out folder, never someone else's files."""
    (tmp_path / "notes.txt").write_text("mine")
    result = run_pm("demo", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"--out {tmp_path} is not empty and was not written by pm demo: choose another folder"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_dotenv_in_the_working_directory_configures_pm(tmp_path):
    (tmp_path / ".env").write_text("PM_RPC_URL=http://127.0.0.1:9\n")
    env = {key: value for key, value in os.environ.items() if key != "PM_RPC_URL"}
    env["PYTHONPATH"] = str(REPO)
    command = [*PM, "model", "show", "--model", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "cannot reach the RPC URL http://127.0.0.1:9"


def test_demo_faults_refuses_a_stage_grace_shorter_than_the_restart(tmp_path):
    """--faults kills stage 0's only worker and restarts it: a grace shorter than that stops the run."""
    result = run_pm("demo", "--faults", "--stage-grace", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "--faults needs --stage-grace 5 or more (stage 0's only worker is killed and restarted: the run "
        "must wait for it)"
    )
    assert not (tmp_path / "out").exists()
