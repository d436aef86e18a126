"""Real swarm processes for the tests: `pm worker run` / `pm driver run` subprocesses on loopback;
every process still running at teardown is terminated, then killed with its process group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offchain.swarm.local import ROOT, LocalProcess, driver_key_args, spawn_pm, worker_args


class Swarm:
    def __init__(self, tmp: Path, spec: Path) -> None:
        self.tmp, self.spec = tmp, spec
        self.procs: list[LocalProcess] = []

    def _spawn(self, name: str, args: list[str], stdout: Path | None = None) -> LocalProcess:
        proc = spawn_pm(name, args, self.tmp, stdout)
        self.procs.append(proc)
        return proc

    def worker(
        self, name: str, stage: int, peers: list[str] = (), state_dir: str | None = None
    ) -> LocalProcess:
        return self._spawn(name, worker_args(self.spec, stage, self.tmp / (state_dir or name), peers))

    def driver(self, name: str, rounds: int, peers: list[str], *extra: str) -> LocalProcess:
        args = ["driver", "run", "--model-spec", str(self.spec), "--rounds", str(rounds), "--json", *extra]
        args += driver_key_args()
        for peer in peers:
            args += ["--initial-peers", peer]
        return self._spawn(name, args, stdout=self.tmp / f"{name}.json")

    def summary(self, proc: LocalProcess, timeout: float = 240.0) -> dict:
        code = proc.popen.wait(timeout=timeout)
        assert code == 0, f"{proc.name} exited with {code}:\n{proc.text()[-3000:]}"
        return json.loads((self.tmp / f"{proc.name}.json").read_text())

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


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
