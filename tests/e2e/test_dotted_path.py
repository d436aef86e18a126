"""A checkout under a folder with a dot in its name (/home/jane.doe/, ~/src/protocol.models/)
deploys and runs the demo like any other.

brownie 1.22 imports a script by the dotted form of its absolute path, so without the start-up
hook `make setup` installs (offchain/brownie_paths.py) `brownie run scripts/deploy.py` fails there
with ModuleNotFoundError. The clone is a `git clone` of this checkout that reuses its .venv and
node_modules through symlinks (what `make setup` would install is already there), gets the
empty .env `make setup` creates, and this checkout's compiled contracts when it has them (brownie
then has nothing to compile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_demo import processes_mentioning
from test_testnet_path import funded

from offchain.demo import deploy
from offchain.demo.anvil import start_anvil
from offchain.paths import REPO

pytestmark = pytest.mark.slow
BROWNIE_WITHOUT_HOOK = [sys.executable, "-c", "from brownie._cli.__main__ import main; main()"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("home") / "jane.doe" / "protocol.models"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(path)], check=True, timeout=300)
    for shared in (".venv", "node_modules"):
        (path / shared).symlink_to(REPO / shared)
    (path / ".env").touch()
    if (REPO / "build" / "contracts").is_dir():
        shutil.copytree(REPO / "build", path / "build", ignore=shutil.ignore_patterns("deployments"))
    return path


@pytest.fixture
def env(clone) -> dict[str, str]:
    """This environment, with the clone's own code first and no PM_* setting of the caller's."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("PM_")}
    return {**kept, "PYTHONPATH": str(clone), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}


def run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_brownie_run_deploys_from_a_dotted_path(clone, env, tmp_path, monkeypatch):
    with start_anvil("--silent") as anvil, deploy.networks_lock():
        network = f"pm-dotted-{anvil.url.rsplit(':', 1)[-1]}"
        added = run(
            ["brownie", "networks", "add", "Ethereum", network, f"host={anvil.url}", "chainid=31337"],
            clone,
            env,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        try:
            env = {**env, "PRIVATE_KEY": funded(anvil, 10).key.hex(), "PM_DEPLOYMENTS": str(tmp_path)}
            # The control: brownie without the hook (argv[0] is not `brownie`) fails as the issue says.
            hookless = run(
                [*BROWNIE_WITHOUT_HOOK, "run", "scripts/deploy.py", "--network", network], clone, env
            )
            assert hookless.returncode != 0 and "ModuleNotFoundError" in hookless.stdout
            deployed = run(["brownie", "run", "scripts/deploy.py", "--network", network], clone, env)
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        finally:
            run(["brownie", "networks", "delete", network], clone, env)
    document = json.loads((tmp_path / "31337.json").read_text())
    assert set(document["contracts"]) >= {"ModelRegistry", "RevenueRouter", "WorkLedger"}
    # pm's own callers name the cause in one line where the hook is missing, never the traceback.
    monkeypatch.setattr(deploy, "REPO", clone)
    message = deploy.brownie_failure(("run", "scripts/deploy.py"), hookless.stdout + hookless.stderr)
    assert "\n" not in message and "a folder in that path has a dot" in message and "make setup" in message


def test_pm_demo_runs_from_a_dotted_path(clone, env, tmp_path):
    """The demo from the clone gets past everything a path can break (brownie deploys, the model is
    created, every role starts and the driver begins), then Ctrl-C stops it cleanly. What follows
    (rounds, claims, payments) does not depend on where the checkout is; tests/e2e/test_demo.py
    runs it in full."""
    out, log = tmp_path / "demo", tmp_path / "demo.txt"
    with open(log, "wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "offchain.cli", "demo", "--rounds", "1", "--out", str(out)],
            cwd=clone,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while "$ pm driver run" not in log.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
    text = log.read_text()
    assert "$ brownie networks add" in text and "ModuleNotFoundError" not in text
    assert "interrupted; every process it started has been stopped" in text
    assert processes_mentioning(str(out)) == []
