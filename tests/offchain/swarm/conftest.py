"""Real swarm processes for the tests: `pm worker run` / `pm driver run` subprocesses on loopback.

Each process runs in its own session so a test can `kill -9` it (and its libp2p daemon) the way a
machine crash would; every process still running at teardown is terminated, then killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MADDR = re.compile(r"maddrs (/ip4/\S+/p2p/\S+)")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.text()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL the whole process group: the worker and its p2pd die together, like a crashed host."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


class Swarm:
    """Starts workers and drivers for one test and always cleans them up."""

    def __init__(self, tmp: Path, spec: Path) -> None:
        self.tmp, self.spec = tmp, spec
        self.procs: list[Proc] = []

    def _spawn(self, name: str, args: list[str], stdout: Path | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as err, open(stdout or os.devnull, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "offchain.cli", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, stage: int, peers: list[str] = (), state_dir: str | None = None) -> Proc:
        args = ["worker", "run", "--model-spec", str(self.spec), "--stage", str(stage)]
        args += ["--state-dir", str(self.tmp / (state_dir or name))]
        for peer in peers:
            args += ["--initial-peers", peer]
        return self._spawn(name, args)

    @staticmethod
    def maddr(proc: Proc) -> str:
        return proc.wait_for(MADDR.pattern).group(1)

    def driver(self, name: str, rounds: int, peers: list[str], *extra: str) -> Proc:
        args = ["driver", "run", "--model-spec", str(self.spec), "--rounds", str(rounds), "--json", *extra]
        for peer in peers:
            args += ["--initial-peers", peer]
        return self._spawn(name, args, stdout=self.tmp / f"{name}.json")

    def summary(self, proc: Proc, timeout: float = 240.0) -> dict:
        code = proc.popen.wait(timeout=timeout)
        assert code == 0, f"{proc.name} exited with {code}:\n{proc.text()[-3000:]}"
        return json.loads((self.tmp / f"{proc.name}.json").read_text())

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # anything left in the group (a p2pd)
                os.killpg(proc.popen.pid, signal.SIGKILL)


def write_spec(tmp: Path, **changes: object) -> Path:
    """specs/tiny.json with `changes` applied (e.g. more steps per round for the fault tests)."""
    spec = json.loads((ROOT / "specs" / "tiny.json").read_text())
    spec.update(changes)
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def swarm_factory(tmp_path):
    swarms: list[Swarm] = []

    def make(**changes: object) -> Swarm:
        swarm = Swarm(tmp_path, write_spec(tmp_path, **changes))
        swarms.append(swarm)
        return swarm

    yield make
    for swarm in swarms:
        swarm.close()
