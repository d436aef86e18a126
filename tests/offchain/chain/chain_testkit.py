"""Helpers for tests that need a real anvil and the compiled contracts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.chain.artifacts import load_artifact
from offchain.chain.client import ChainClient

REPO = Path(__file__).resolve().parents[3]
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_account(index: int) -> LocalAccount:
    """One of the accounts anvil funds by default (derived from its public test mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_rpc(url: str, timeout_s: float = 20.0) -> None:
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        try:
            requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"anvil did not answer at {url}")


def deploy(client: ChainClient, name: str, *args):
    """Deploy a compiled contract from the client's account (tests only; real deployments use brownie)."""
    artifact = load_artifact(name)
    factory = client.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = client.transact(factory.constructor(*args), action=f"deploy {name}")
    return client.w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)


class TcpProxy:
    """A loopback TCP proxy that can be taken down and brought back on the same port,
    to show the daemons ride out an RPC endpoint that drops."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
                self._listener.close()
                self._listener = None
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            sink.close()
