"""Swarm processes on this machine (tests, benchmarks): `pm` subprocesses in their own sessions.

Each process leads its own process group, so `kill9` takes the worker and its libp2p daemon down
together, as a crashed host would, and `stop` can always clean up whatever is left.

An off-chain swarm admits only the addresses on its allow-list: the local workers and driver all
sign with one throwaway key (`LOCAL_KEY_ENV`, derived from a public string, never funded) and each
worker allows that one address."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

ROOT = Path(__file__).resolve().parents[2]
MADDR = re.compile(r"maddrs (/ip4/\S+/p2p/\S+)")
LOCAL_KEY_ENV = "PM_LOCAL_SWARM_KEY"
LOCAL_KEY = keccak(text="pm-local-swarm").hex()
LOCAL_ADDRESS = Account.from_key(LOCAL_KEY).address


@dataclass
class LocalProcess:
    name: str
    popen: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match:
        """The first match of `pattern` in the process's log; fails if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.text()[-3000:]}")

    def maddr(self, timeout: float = 120.0) -> str:
        """The multiaddr a worker printed once it serves (use it as --initial-peers)."""
        return self.wait_for(MADDR.pattern, timeout).group(1)

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after `timeout`, then anything left in the group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def spawn_pm(
    name: str, args: list[str], log_dir: Path, stdout: Path | None = None, env: dict[str, str] | None = None
) -> LocalProcess:
    """Start `pm <args>` with this checkout on PYTHONPATH and `env` added to this environment;
    stderr goes to <log_dir>/<name>.log."""
    log = log_dir / f"{name}.log"
    env = {**os.environ, LOCAL_KEY_ENV: LOCAL_KEY, **(env or {}), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as err, open(stdout or os.devnull, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "offchain.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    return LocalProcess(name, popen, log)


def worker_args(
    spec: Path, stage: int, state_dir: Path, peers: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """An off-chain worker of the local swarm: signs with the local key, allows only the local address."""
    args = ["worker", "run", "--model-spec", str(spec), "--stage", str(stage), "--state-dir", str(state_dir)]
    args += ["--private-key-env", LOCAL_KEY_ENV, "--allow", LOCAL_ADDRESS]
    for peer in peers:
        args += ["--initial-peers", peer]
    return args


def chain_worker_args(
    model_id: int, stage: int, state_dir: Path, chain_args: list[str], peers: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """An on-chain worker (`pm worker run --model`): it stakes and joins `stage` under its libp2p peer
    id, so the stage's members, the model's drivers and its gateways are the only peers it serves and
    the only ones that accept it. Its key is PM_PRIVATE_KEY in its environment; `chain_args`: its
    --rpc-url, --deployments and --store."""
    args = ["worker", "run", "--model", str(model_id), "--stage", str(stage), "--state-dir", str(state_dir)]
    args += chain_args
    for peer in peers:
        args += ["--initial-peers", peer]
    return args


def driver_key_args() -> list[str]:
    """What makes `pm driver run --model-spec` sign as the local swarm's allowed address."""
    return ["--private-key-env", LOCAL_KEY_ENV]
