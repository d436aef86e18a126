"""`pm worker run --model` end to end on a real anvil, real hivemind peers and the embedded store:
three on-chain stage workers and `pm driver run --model` train two rounds; every worker claims each
round, finalizes its claims once the window has passed (chain time), earns workUnits x rate shares;
checkpointOf advances to digests equal to the single-process reference, and a validator granted the
stage keys over P2P decrypts each checkpoint to its on-chain digest. Stage 0 talks to the chain
through a proxy that goes down for a while: the daemon rides it out."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from urllib.parse import urlparse

import pytest
from chain_testkit import TcpProxy, anvil_account
from worker_kit import ETHER, ChainSwarm, worker_account

from offchain.chain.client import ChainClient
from offchain.chain.protocol import Protocol
from offchain.model.reference import train_single_process
from offchain.models import spec_of_model
from offchain.rounds import fetch_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.keyshare import EncryptionKeypair, request_stage_key
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node

pytestmark = pytest.mark.slow

ROUNDS = 2
VALIDATOR = anvil_account(8)


@pytest.fixture
def swarm(chain, tmp_path):
    url, deployments = chain
    swarm = ChainSwarm.create(url, deployments, tmp_path)
    try:
        yield swarm
    finally:
        swarm.close()


async def granted_keys(swarm: ChainSwarm, peer: str, tmp_path) -> list:
    """The stage keys as a validator gets them: a signed request over P2P, checked on-chain."""
    client = ChainClient(swarm.rpc_url, VALIDATOR)
    protocol = Protocol.load(client, swarm.deployments)
    ledger = protocol.ledger
    client.transact(ledger.functions.stake(), value=ledger.functions.parameters().call()[8])
    client.transact(ledger.functions.registerValidator())
    _, spec = spec_of_model(protocol, EmbeddedStore(tmp_path / "store"), swarm.model_id)
    keypair = EncryptionKeypair.load_or_create(tmp_path / "validator-key")
    node = await start_node(NetworkConfig(initial_peers=(peer,)), client_mode=True)
    try:
        return [
            await request_stage_key(
                node.p2p, node, protocol, spec.digest(), swarm.model_id, stage, VALIDATOR, keypair, timeout=30
            )
            for stage in range(3)
        ]
    finally:
        await shutdown_node(node)


def test_three_workers_claim_and_finalize_two_rounds(swarm, tmp_path):
    proxy = TcpProxy(urlparse(swarm.rpc_url).port)
    proxy.start()
    try:
        first = swarm.worker("worker0", 0, rpc_url=proxy.url)
        boot = first.maddr()
        workers = [first] + [swarm.worker(f"worker{s}", s, [boot]) for s in (1, 2)]
        for worker in workers[1:]:
            worker.maddr()
        summary = swarm.summary(swarm.driver("driver", ROUNDS, [boot]))
        assert [r["round"] for r in summary["rounds"]] == [1, 2], "on-chain rounds start at 1"

        for worker in workers:
            worker.wait_for(r"round 1 submitted: claim \d+")
            worker.wait_for(r"round 2 published")
        proxy.stop()  # stage 0's RPC endpoint goes away while its claim's window passes
        threading.Timer(3.0, proxy.start).start()
        swarm.pass_challenge_window()
        for worker in workers:
            worker.wait_for(r"round 1 finalized: claim \d+, \d+ shares minted", timeout=90)
            worker.wait_for(r"round 2 submitted: claim \d+", timeout=60)
        assert "retrying" in first.text(), "stage 0 must have met the dropped endpoint"
        time.sleep(1.0)
        swarm.pass_challenge_window()
        for worker in workers:
            worker.wait_for(r"round 2 finalized: claim \d+", timeout=60)
        keys = asyncio.run(granted_keys(swarm, boot, tmp_path))
        for worker in workers:  # SIGTERM: the current step finishes, the process exits cleanly
            worker.stop()
            assert worker.popen.returncode == 0, worker.text()[-2000:]
    finally:
        proxy.stop()

    protocol, model_id = swarm.protocol, swarm.model_id
    _, spec = spec_of_model(protocol, EmbeddedStore(tmp_path / "store"), model_id)
    units = spec.round_steps * spec.micro_batches
    shares = protocol.shares(protocol.model(model_id))
    reference = train_single_process(spec, ROUNDS, first_round=1, model_id=model_id)
    reader = EmbeddedStore(tmp_path / "store")  # a fresh handle: nothing cached from the workers
    for stage in range(3):
        claims = swarm.claims(stage)
        assert [(c["round"], c["workUnits"]) for c in claims] == [(1, units), (2, units)]
        assert claims[0]["parentCID"] == "" and claims[1]["parentCID"] == claims[0]["checkpointCID"]
        balance = shares.functions.balanceOf(worker_account(stage).address).call()
        assert balance == sum(c["workUnits"] for c in claims) * ETHER
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        assert (cid, round_) == (claims[1]["checkpointCID"], 2)
        state = fetch_checkpoint(reader, keys[stage], cid, digest)
        assert (
            hashlib.sha256(state).hexdigest()
            == reference.state_digests[stage]
            == summary["final_digests"][stage]
        )

    gas = [
        int(g) for w in workers for g in re.findall(r"(?:submitted|finalized): claim .* gas (\d+)", w.text())
    ]
    print(f"gas per round per worker (submitClaim + finalize): {sum(gas) / (3 * ROUNDS):.0f}")
