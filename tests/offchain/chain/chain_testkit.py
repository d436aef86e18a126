"""Helpers for tests that need a real anvil and the compiled contracts."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

from eth_account.signers.local import LocalAccount

from offchain.chain.artifacts import load_artifact
from offchain.chain.client import ChainClient
from offchain.demo import anvil as local_anvil
from offchain.demo.anvil import anvil_account, free_port
from offchain.demo.deploy import brownie
from offchain.demo.deploy import deploy_protocol as brownie_deploy

__all__ = ["anvil_account", "brownie", "free_port"]

REPO = Path(__file__).resolve().parents[3]


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


def start_anvil(*extra_args: str) -> tuple[subprocess.Popen, str]:
    """A real anvil on a free loopback port; the caller terminates it."""
    anvil = local_anvil.start_anvil("--silent", *extra_args)
    return anvil.process, anvil.url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def deploy_protocol(rpc_url: str, deployments_dir: Path, deployer: LocalAccount) -> dict:
    """Deploy with scripts/deploy.py on brownie's live-network path (a key, not unlocked accounts),
    exactly as on a public testnet; returns deployments/<chainId>.json."""
    return brownie_deploy(rpc_url, deployments_dir, deployer).document


def advance_time(client: ChainClient, seconds: int) -> None:
    client.w3.provider.make_request("evm_increaseTime", [seconds])
    client.w3.provider.make_request("evm_mine", [])


def join_stage(
    protocol, worker: ChainClient, model_id: int, stage: int, encryption_key: bytes = b"\x01" * 32
):
    """Stake the minimum (plus one claim bond) and join a stage through the real WorkLedger; returns
    the worker's handle on the ledger."""
    ledger = worker.contract("WorkLedger", protocol.ledger.address)
    params = ledger.functions.parameters().call()
    claim_bond, min_worker_stake = params[1], params[7]
    worker.transact(ledger.functions.stake(), value=min_worker_stake + claim_bond)
    worker.transact(ledger.functions.join(model_id, stage, b"peer", encryption_key))
    return ledger


def submit_and_finalize(ledger, worker: ChainClient, claim_input: tuple) -> int:
    """submitClaim, let the challenge window pass unchallenged, finalize; returns the claim id."""
    receipt = worker.transact(ledger.functions.submitClaim(claim_input))
    (submitted,) = ledger.events.ClaimSubmitted().process_receipt(receipt)
    advance_time(worker, ledger.functions.parameters().call()[0] + 1)
    worker.transact(ledger.functions.finalize(submitted["args"]["claimId"]))
    return submitted["args"]["claimId"]


def earned_checkpoint(stage: int) -> bytes:
    """The bytes32 checkpoint CID `earn_shares` claims for `stage` (what checkpointOf then holds)."""
    return bytes([0x10 + stage]) * 32


def earn_shares(protocol, worker: ChainClient, model_id: int, stage: int, work_units: int) -> int:
    """Take `worker` from nothing to shares: stake, join, claim round 1 of the stage (its first
    checkpoint, so no parent), finalize unchallenged. ClaimInput as in IWorkLedger v2."""
    ledger = join_stage(protocol, worker, model_id, stage)
    checkpoint_cid, digest, root, manifest_cid = (
        earned_checkpoint(stage),
        b"\x02" * 32,
        b"\x03" * 32,
        b"\x04" * 32,
    )
    claim_input = (model_id, stage, 1, 1, bytes(32), checkpoint_cid, digest, root, manifest_cid, work_units)
    return submit_and_finalize(ledger, worker, claim_input)
