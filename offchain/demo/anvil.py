"""A local anvil chain as a child process, and the accounts it funds.

Used by `pm demo` and by the tests; the anvil binary is the one `make setup` links into .venv/bin.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.errors import UserError
from offchain.paths import REPO

# anvil's default test mnemonic: its first accounts are funded with 10,000 ETH each.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_account(index: int) -> LocalAccount:
    """One of the accounts anvil funds by default (derived from its public test mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rpc(url: str, method: str, params: list | None = None, timeout_s: float = 5.0) -> object:
    """One JSON-RPC call (anvil's evm_* and anvil_* methods are not in web3's API)."""
    reply = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=timeout_s
    ).json()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def chain_id(url: str) -> int:
    return int(rpc(url, "eth_chainId"), 16)


@dataclass
class Anvil:
    """A running anvil child process; `stop` (or the context manager) ends it."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Anvil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def increase_time(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block stamped with it (deadlines use block time)."""
        rpc(self.url, "evm_increaseTime", [seconds])
        rpc(self.url, "evm_mine")


def anvil_binary() -> str:
    found = shutil.which("anvil") or REPO / ".venv" / "bin" / "anvil"
    if not Path(found).exists():
        raise UserError("anvil not found: run `make setup` (it links the npm package's binary)")
    return str(found)


def start_anvil(*extra_args: str, log: Path | None = None, timeout_s: float = 20.0) -> Anvil:
    """Start anvil on a free loopback port and wait until it answers.

    It runs in its own session, so a Ctrl-C at the terminal reaches only our process, whose
    cleanup then stops the chain after the processes that use it."""
    port = free_port()
    with open(log or "/dev/null", "wb") as out:
        process = subprocess.Popen(
            [anvil_binary(), "--port", str(port), *extra_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    anvil = Anvil(process, port)
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        if process.poll() is not None:
            raise UserError(f"anvil exited with code {process.returncode} before answering on port {port}")
        with contextlib.suppress(httpx.TransportError):
            chain_id(anvil.url)
            return anvil
        time.sleep(0.1)
    anvil.stop()
    raise UserError(f"anvil did not answer on port {port} within {timeout_s:.0f}s")
