"""`pm worker run --model` end to end on a real anvil, real hivemind peers and the embedded store:
three on-chain stage workers and `pm driver run --model` train two rounds; every worker claims each
round, finalizes its claims once the window has passed (chain time), earns workUnits x rate shares;
checkpointOf advances to digests equal to the single-process reference, and a validator granted the
stage keys over P2P decrypts each checkpoint to its on-chain digest. Along the way two workers are
killed at the two crash points of the claim flow and one loses its RPC endpoint for a while.
Bad input: one line, a non-zero exit, and not a single transaction from the worker's account."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from subprocess import PIPE
from urllib.parse import urlparse

import pytest
from chain_testkit import REPO, TcpProxy, anvil_account
from eth_account import Account
from worker_kit import ETHER, ChainSwarm, worker_account

from offchain.chain.client import ChainClient
from offchain.chain.models import spec_of_model
from offchain.chain.protocol import ETH, Protocol
from offchain.model.reference import train_single_process
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import fetch_checkpoint, fetch_trace
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.keyshare import EncryptionKeypair, request_stage_key
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node
from offchain.swarm.server import RoundState
from offchain.worker.daemon import ChainWorker, ChainWorkerConfig

pytestmark = pytest.mark.slow

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


def reject_claim(swarm: ChainSwarm, claim_id: int) -> None:
    """A validator challenges the claim and another votes it invalid (quorum set to 1 by the owner):
    the claim is rejected and its worker slashed, as a verifier would make happen to a false one."""
    url, ledger = swarm.rpc_url, swarm.protocol.ledger
    owner = ChainClient(url, anvil_account(0))
    owner.transact(
        owner.contract("WorkLedger", ledger.address).functions.setParameter(b"quorum".ljust(32, b"\0"), 1)
    )
    challenger, voter = (ChainClient(url, anvil_account(i)) for i in (5, 6))
    params = ledger.functions.parameters().call()
    for validator in (challenger, voter):
        mine = validator.contract("WorkLedger", ledger.address)
        validator.transact(mine.functions.stake(), value=params[8] + params[1])
        validator.transact(mine.functions.registerValidator())
    challenger.transact(
        challenger.contract("WorkLedger", ledger.address).functions.challenge(claim_id, 0, "QmEvidence")
    )
    voter.transact(voter.contract("WorkLedger", ledger.address).functions.vote(claim_id, False))
    voter.transact(voter.contract("WorkLedger", ledger.address).functions.resolve(claim_id))


def test_workers_claim_and_finalize_rounds_through_crashes_an_rpc_drop_and_a_rejection(swarm, tmp_path):
    """One swarm, every on-chain path of the worker (process start-up dominates the cost on 2 cores,
    so one run). Round 1: stage 1 dies once the round is stored and journaled but not submitted,
    stage 2 once submitClaim is sent but before its hash and receipt are recorded; restarted, each
    has exactly one claim for the round; stage 0's RPC endpoint drops while the window passes.
    Round 2: stage 2's claim is rejected and slashed; the stage goes back to its round-1 checkpoint.
    Round 3: every stage claims again, stage 2 from that checkpoint."""
    proxy = TcpProxy(urlparse(swarm.rpc_url).port)
    proxy.start()
    try:
        first = swarm.worker("worker0", 0, rpc_url=proxy.url)
        boot = first.maddr()
        crash_at = {1: "after-store", 2: "after-send"}
        crashing = [swarm.worker(f"worker{s}", s, [boot], crash_at=crash_at[s]) for s in (1, 2)]
        for worker in crashing:
            worker.maddr()
        summary = swarm.summary(swarm.driver("driver", 1, [boot]))
        assert [r["round"] for r in summary["rounds"]] == [1], "on-chain rounds start at 1"
        for worker in crashing:
            assert worker.popen.wait(timeout=60) == 137, worker.text()[-2000:]
        assert "round 1 published" in crashing[0].text()
        assert swarm.claims(1) == [], "after-store: nothing was sent"
        assert [c["round"] for c in swarm.claims(2)] == [1], "after-send: the claim reached the chain"

        restarted = [swarm.worker(f"worker{s}-restart", s, [boot]) for s in (1, 2)]
        for worker in restarted:
            worker.maddr()
        assert "resuming stage 1 from its round 2 state on disk" in restarted[0].text()
        restarted[0].wait_for(r"round 1 submitted: claim \d+, checkpoint")
        restarted[1].wait_for(r"round 1 submitted: claim \d+ already on-chain \(found after restart\)")
        first.wait_for(r"round 1 submitted: claim \d+, checkpoint")
        workers = [first, *restarted]

        proxy.stop()  # stage 0's RPC endpoint goes away while its claim's window passes
        swarm.pass_challenge_window()
        first.wait_for(r"rpc \w+ failed \(ConnectionError\); retrying", timeout=60)
        proxy.start()
        for worker in workers:
            worker.wait_for(r"round 1 finalized: claim \d+, \d+ shares minted", timeout=90)

        round2 = swarm.summary(swarm.driver("driver2", 1, [boot]))
        assert [r["round"] for r in round2["rounds"]] == [2]
        for worker in workers:
            worker.wait_for(r"round 2 submitted: claim \d+", timeout=60)
        reject_claim(swarm, swarm.claims(2)[1]["claimId"])
        workers[2].wait_for(r"round 2 rejected: claim \d+, no shares", timeout=60)
        workers[2].wait_for(r"round 2 slashed: claim \d+, bond of \d+ wei lost")
        workers[2].wait_for(r"stage 2 back to the finalized checkpoint of round 1", timeout=60)
        swarm.pass_challenge_window()
        for worker in workers[:2]:
            worker.wait_for(r"round 2 finalized: claim \d+", timeout=60)

        round3 = swarm.summary(swarm.driver("driver3", 1, [boot]))
        for worker in workers:
            worker.wait_for(r"round 3 submitted: claim \d+", timeout=60)
        swarm.pass_challenge_window()
        for worker in workers:
            worker.wait_for(r"round 3 finalized: claim \d+", timeout=60)
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
    reference = train_single_process(spec, 2, first_round=1, model_id=model_id)
    assert round2["final_digests"] == reference.state_digests
    reader = EmbeddedStore(tmp_path / "store")  # a fresh handle: nothing cached from the workers
    claims = [swarm.claims(stage) for stage in range(3)]
    for stage in range(3):
        assert [(c["round"], c["workUnits"]) for c in claims[stage]] == [(1, units), (2, units), (3, units)]
        assert claims[stage][0]["parentCID"] == ""
        assert claims[stage][1]["parentCID"] == claims[stage][0]["checkpointCID"]
    assert [c["parentCID"] for c in claims[2]][2] == claims[2][0]["checkpointCID"], (
        "round 3 of stage 2 follows round 1"
    )
    assert claims[0][2]["parentCID"] == claims[0][1]["checkpointCID"]

    round3_starts = [
        fetch_checkpoint(reader, keys[s], c["checkpointCID"], c["checkpointDigest"])
        for s, c in ((0, claims[0][1]), (1, claims[1][1]), (2, claims[2][0]))
    ]
    expected = train_single_process(
        spec, 1, first_round=3, states=round3_starts, model_id=model_id
    ).state_digests
    for stage in range(3):
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        assert (cid, round_) == (claims[stage][2]["checkpointCID"], 3)
        state = fetch_checkpoint(reader, keys[stage], cid, digest)
        assert hashlib.sha256(state).hexdigest() == expected[stage] == round3["final_digests"][stage]
        finalized_rounds = 2 if stage == 2 else 3
        balance = shares.functions.balanceOf(worker_account(stage).address).call()
        assert balance == finalized_rounds * units * ETHER
    params = protocol.ledger.functions.parameters().call()
    staked = [protocol.ledger.functions.stakeOf(worker_account(s).address).call()[0] for s in range(3)]
    assert staked[2] == staked[0] - params[1], "stage 2 lost exactly one claim bond"

    costs = [swarm.claim_gas(stage) for stage in range(2)]  # stage 2's round 2 never finalized
    for index in range(3):
        submit, finalize = (sum(stage[index][column] for stage in costs) / 2 for column in (0, 1))
        print(f"\nround {index + 1} gas per worker: submitClaim {submit:.0f} + finalize {finalize:.0f}")


class NotEthereum(BaseHTTPRequestHandler):
    """A web server that is not an Ethereum node."""

    def do_POST(self) -> None:
        body = b"<html><body>hello</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_bad_input_is_one_line_and_sends_nothing(chain, tmp_path):
    url, deployments = chain
    swarm = ChainSwarm.create(url, deployments, tmp_path)
    creator, registry = swarm.protocol.client, swarm.protocol.registry
    junk = EmbeddedStore(tmp_path / "store").put(b"\x00 this is not a model spec")
    bad_models = {}
    for name, cid in (("undecodable", "not-a-cid"), ("junk", junk)):
        receipt = creator.transact(registry.functions.createModel(cid, 3, ETHER, ETH, creator.address))
        (created,) = registry.events.ModelCreated().process_receipt(receipt)
        bad_models[name] = str(created["args"]["modelId"])
    outsider = anvil_account(7)
    keystore = tmp_path / "keystore.json"
    keystore.write_text(json.dumps(Account.encrypt(outsider.key, "right password")))
    web = ThreadingHTTPServer(("127.0.0.1", 0), NotEthereum)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    model = str(swarm.model_id)
    cases = {
        "unknown model id 99": (["--model", "99", "--stage", "0"], {}),
        "stage 3 out of range": (["--model", model, "--stage", "3"], {}),
        "spec CID 'not-a-cid'": (["--model", bad_models["undecodable"], "--stage", "0"], {}),
        "does not decode as a JSON model spec": (["--model", bad_models["junk"], "--stage", "0"], {}),
        "wrong password": (
            ["--model", model, "--stage", "0", "--key-file", str(keystore)],
            {"PM_KEY_PASSWORD": "wrong password"},
        ),
        "is not an Ethereum JSON-RPC node": (
            ["--model", model, "--stage", "0", "--rpc-url", f"http://127.0.0.1:{web.server_port}"],
            {},
        ),
    }
    try:
        runs = {}
        for expected, (args, env) in cases.items():
            command = [sys.executable, "-m", "offchain.cli", "worker", "run", *args]
            command += swarm.chain_args() if "--rpc-url" not in args else swarm.chain_args()[2:]
            environment = {**os.environ, "PYTHONPATH": str(REPO), "PM_PRIVATE_KEY": outsider.key.hex(), **env}
            if "--key-file" in args:
                del environment["PM_PRIVATE_KEY"]
            runs[expected] = subprocess.Popen(command, env=environment, stdout=PIPE, stderr=PIPE, text=True)
        for expected, run in runs.items():
            _, stderr = run.communicate(timeout=120)
            assert run.returncode != 0, expected
            assert expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
    finally:
        web.shutdown()
    assert creator.w3.eth.get_transaction_count(outsider.address) == 0, "a transaction was sent"


def test_cheat_changes_what_is_published_never_the_state_trained_on(chain, tmp_path):
    """--cheat (a test tool) runs each committed round through offchain.worker.cheats before it is stored:
    the stored round is refuted by a replay from the honest parent, while the journal keeps the
    honest state's digest (the one the swarm trains on, and the next round's parent)."""
    url, deployments = chain
    swarm = ChainSwarm.create(url, deployments, tmp_path)
    account, store = worker_account(0), EmbeddedStore(tmp_path / "store")
    protocol = Protocol.load(ChainClient(url, account), deployments)
    _, spec = spec_of_model(protocol, store, swarm.model_id)
    honest = train_single_process(spec, 1, first_round=1, model_id=swarm.model_id)
    parent = StageTrainer(spec, 0, model_id=swarm.model_id).state_bytes()
    assert replay_round(spec, 0, parent, honest.traces[0], require_signatures=False).ok
    for mode in ("skip-steps", "fake-digest", "wrong-parent"):
        config = ChainWorkerConfig(swarm.model_id, 0, spec, tmp_path / mode, cheat=mode)
        worker = ChainWorker(config, protocol, store, account)
        worker.key = StageKey.generate(swarm.model_id, 0)
        worker.publish(RoundState(1, parent), RoundState(2, honest.states[0]), honest.traces[0])
        (entry,) = worker.journal.entries()
        assert entry.state_digest == hashlib.sha256(honest.states[0]).digest()
        assert entry.parent_digest == hashlib.sha256(parent).digest()
        published = entry.published
        assert published.checkpoint_digest != entry.state_digest, mode
        trace = fetch_trace(store, worker.key, published.trace_cid, published.trace_root)
        assert not replay_round(spec, 0, parent, trace, require_signatures=False).ok, mode
