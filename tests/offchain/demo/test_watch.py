"""`pm demo`'s watch over its daemons, on real processes: a death is told in one line and the run
goes on while the stage has another worker; the run stops, naming the stage, once a stage has had
no live worker for the grace period, and at once when the chain is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offchain.demo.anvil import Anvil
from offchain.demo.fleet import Fleet
from offchain.demo.watch import Watch
from offchain.errors import UserError
from offchain.swarm.local import LocalProcess


def sleeper(tmp: Path, name: str) -> LocalProcess:
    log = tmp / f"{name}.log"
    log.touch()
    popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    return LocalProcess(name, popen, log)


def kill9(process: LocalProcess) -> None:
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(timeout=30)


@pytest.fixture
def fleet(tmp_path):
    fleet = Fleet(tmp_path / "logs", tmp_path / "pids", lambda line: None)
    yield fleet
    fleet.close()


def test_a_dead_replica_is_told_once_and_the_last_worker_of_a_stage_stops_the_run_after_the_grace(
    tmp_path, fleet
):
    lines: list[str] = []
    watch = Watch(fleet, lines.append, grace_s=1.0)
    processes = {name: sleeper(tmp_path, name) for name in ("worker-s1-0", "worker-s1-1", "verifier-s1-0")}
    fleet.daemons += processes.values()
    for name in ("worker-s1-0", "worker-s1-1"):
        watch.add(name, "worker", 1, processes[name], ["worker", "run"])
    watch.add("verifier-s1-0", "validator", 1, processes["verifier-s1-0"], ["verifier", "run"])
    watch.expect("worker-s1-0", "kill -9 mid-round")

    kill9(processes["worker-s1-1"])
    watch.check()
    watch.check()
    (line,) = lines
    assert line.startswith(
        "[yellow]worker-s1-1 exited with code -9[/yellow]: stage 1 goes on with worker-s1-0"
    )

    kill9(processes["verifier-s1-0"])
    watch.check()
    assert "stage 1 has no live validator" in lines[-1] and watch.live_validators(1) == []

    kill9(processes["worker-s1-0"])
    watch.check()  # inside the grace: a restarted worker could still come back
    assert lines[-1].startswith(
        "[yellow]worker-s1-0 exited with code -9 (kill -9 mid-round)[/yellow]: stage 1"
    )
    assert "has no live worker" in lines[-1] and lines[-1].endswith(f"(log: {processes['worker-s1-0'].log})")
    restarted = sleeper(tmp_path, "worker-s1-0.1")
    fleet.daemons.append(restarted)
    watch.restarted("worker-s1-0", restarted)
    time.sleep(1.5)
    watch.check()  # back in time: the run goes on
    watch.recovered("worker-s1-0")
    kill9(restarted)
    watch.check()
    time.sleep(1.5)
    with pytest.raises(
        UserError, match=r"stage 1 has had no live worker for 1s \(worker-s1-0, worker-s1-1 exited\)"
    ):
        watch.check()
    faults = [fault.document() for fault in watch.faults]
    assert [(f["fault"], f["name"], f["exit_code"], f["restarted"]) for f in faults] == [
        ("exited", "worker-s1-1", -9, False),
        ("exited", "verifier-s1-0", -9, False),
        ("kill -9 mid-round", "worker-s1-0", -9, True),
        ("exited", "worker-s1-0", -9, False),
    ]
    assert faults[2]["recovered_s"] is not None and faults[2]["recovered_s"] >= 0


def test_a_dead_chain_stops_the_run_at_once(tmp_path, fleet):
    chain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    fleet.anvil = Anvil(chain, 8545)
    watch = Watch(fleet, lambda line: None)
    watch.check()
    chain.kill()
    chain.wait(timeout=30)
    with pytest.raises(UserError, match="anvil exited with code -9: the chain is gone, the run cannot go on"):
        watch.check()
