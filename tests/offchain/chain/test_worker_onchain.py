"""`pm worker run --model` end to end on a real anvil (a block a second), real hivemind peers and the
embedded store, with the public-testnet challenge window of one day: three on-chain stage workers
and `pm driver run --model` train ten rounds; each worker claims them as they are published (one
round per claim, five, and three with a time budget), chained on its own open claims, all before
the first window ends; one time warp later each worker finalizes all of its claims in one
transaction and owns workUnits x rate shares per round. checkpointOf ends at round 10 with digests
equal to the single-process reference, and the stage's validator, granted its key over P2P, decrypts
it. Along the way one worker is killed (as by kill -9) with five open claims and a sixth in flight,
one before a round reaches a claim, and one loses its RPC endpoint while its claims come due.
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
from worker_kit import DAY, ETHER, ChainSwarm, lean_spec, wait_until, worker_account

from offchain.chain.client import ChainClient
from offchain.chain.models import spec_of_model
from offchain.chain.protocol import ETH, Protocol
from offchain.chain.status import cid_of
from offchain.chain.structs import call_struct
from offchain.model.reference import train_single_process
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import fetch_checkpoint, fetch_manifest, fetch_trace
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.keyshare import EncryptionKeypair, HeldKey, StageKeyUnavailable, request_stage_key
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node
from offchain.swarm.server import RoundState
from offchain.worker.daemon import ChainWorker, ChainWorkerConfig

pytestmark = pytest.mark.slow

ANVIL_ARGS = ("--block-time", "1")  # chain time moves on its own, as on a real chain (--claim-wait)
VALIDATORS = [anvil_account(5 + stage) for stage in range(3)]  # one per stage


def register_validators(swarm: ChainSwarm) -> None:
    """One validator per stage: registerValidator(model, stage) after staking the minimum."""
    minimum = swarm.parameters()["minValidatorStake"]
    for stage, validator in enumerate(VALIDATORS):
        client = ChainClient(swarm.rpc_url, validator)
        ledger = client.contract("WorkLedger", swarm.protocol.ledger.address)
        client.transact(ledger.functions.stake(), value=minimum)
        client.transact(ledger.functions.registerValidator(swarm.model_id, stage))


async def granted_keys(swarm: ChainSwarm, peer: str, tmp_path) -> list[StageKey]:
    """Each stage's key as that stage's validator gets it: a signed request over P2P, checked on-chain.
    A validator is granted its own stage's key only: stage 1's asking for stage 2's is refused."""
    node = await start_node(NetworkConfig(initial_peers=(peer,)), client_mode=True)
    keys = []
    try:
        for stage, validator in enumerate(VALIDATORS):
            protocol = Protocol.load(ChainClient(swarm.rpc_url, validator), swarm.deployments)
            _, spec = spec_of_model(protocol, EmbeddedStore(tmp_path / "store"), swarm.model_id)
            keypair = EncryptionKeypair.load_or_create(tmp_path / f"validator-key-{stage}")
            ask = (node.p2p, node, protocol, spec.digest(), swarm.model_id)
            keys.append(await request_stage_key(*ask, stage, validator, keypair, timeout=30))
            if stage == 1:
                with pytest.raises(StageKeyUnavailable, match="neither a member nor a validator of stage 2"):
                    await request_stage_key(*ask, 2, validator, keypair, timeout=1)
    finally:
        await shutdown_node(node)
    return keys


def test_every_round_is_claimed_while_training_and_finalized_in_one_run_a_day_later(chain, tmp_path):
    """One swarm, every on-chain path of the worker (process start-up dominates the cost on 2 cores).
    Stage 0 claims each round alone and dies after sending its sixth claim (five open, one in
    flight, its hash not recorded); restarted, it finds that claim on-chain. Stage 1 claims five
    rounds at a time and dies once round 3 is stored, before any claim; restarted from disk, its
    first claim still covers rounds 1..5. Stage 2 claims three at a time, the rest once the oldest
    waited 20 s, and loses its RPC endpoint while its claims come due."""
    url, deployments = chain
    swarm = ChainSwarm.create(url, deployments, tmp_path, lean_spec(tmp_path))
    try:
        swarm.set_parameters(challengeWindow=DAY, voteWindow=DAY)
        register_validators(swarm)
        proxy = TcpProxy(urlparse(swarm.rpc_url).port)
        proxy.start()
        try:
            rounds = run_ten_rounds(swarm, proxy)
            keys = asyncio.run(granted_keys(swarm, rounds["peer"], tmp_path))
            for worker in rounds["workers"]:  # SIGTERM: the current step finishes, the process exits cleanly
                worker.stop()
                assert worker.popen.returncode == 0, worker.text()[-2000:]
        finally:
            proxy.stop()
    finally:
        swarm.close()
    check_ten_rounds(swarm, rounds, keys, tmp_path)


def run_ten_rounds(swarm: ChainSwarm, proxy: TcpProxy) -> dict:
    first = swarm.worker("worker0", 0, crash_at="after-send#6")
    boot = first.maddr()
    fives = swarm.worker("worker1", 1, [boot], crash_at="after-store#3", extra=["--rounds-per-claim", "5"])
    threes = ["--rounds-per-claim", "3", "--claim-wait", "20"]
    budget = swarm.worker("worker2", 2, [boot], rpc_url=proxy.url, extra=threes)
    fives.maddr()
    budget.maddr()
    swarm.summary(swarm.driver("driver1", 3, [boot]))
    assert fives.popen.wait(timeout=60) == 137, fives.text()[-2000:]
    assert "round 3 published" in fives.text()
    assert swarm.claims(1) == [], "stage 1 claims five rounds at a time"
    fives = swarm.worker("worker1-restart", 1, [boot], extra=["--rounds-per-claim", "5"])
    fives.maddr()
    assert "resuming stage 1 from its round 4 state on disk" in fives.text()

    swarm.summary(swarm.driver("driver2", 3, [boot]))
    assert first.popen.wait(timeout=60) == 137, first.text()[-2000:]
    wait_until("the sixth claim reaches the chain", lambda: swarm.rounds_claimed(0) == [1, 2, 3, 4, 5, 6])
    open_claims = swarm.protocol.ledger.functions.openClaimsOf(swarm.model_id, worker_account(0).address)
    assert len(open_claims.call()) == 6
    peer = fives.maddr()
    first = swarm.worker("worker0-restart", 0, [peer])
    first.wait_for(r"round 6 submitted: claim \d+ already on-chain \(found after restart\)")

    last = swarm.summary(swarm.driver("driver3", 4, [peer]))
    trained_by = swarm.protocol.client.w3.eth.block_number
    first.wait_for(r"round 10 submitted: claim \d+", timeout=60)
    fives.wait_for(r"rounds 6\.\.10 submitted: claim \d+", timeout=60)
    budget.wait_for(r"rounds? (\d+\.\.)?10 submitted: claim \d+", timeout=90)
    workers = [first, fives, budget]
    for stage in range(3):
        assert swarm.rounds_claimed(stage) == list(range(1, 11)), f"stage {stage}: each round once"
    ledger, client = swarm.protocol.ledger, swarm.protocol.client
    first_deadline = call_struct(client, ledger.functions.getClaim(swarm.claims(0)[0]["claimId"]))["deadline"]
    assert client.w3.eth.get_block("latest")["timestamp"] < first_deadline, "all claimed in the first window"
    assert all(c["block"] <= trained_by for c in swarm.claims(0) if c["lastRound"] <= 6), (
        "claimed while training"
    )
    opened = [
        len(ledger.functions.openClaimsOf(swarm.model_id, worker_account(s).address).call()) for s in range(3)
    ]
    assert opened == [10, 2, len(swarm.claims(2))], "nothing finalized before the window ends"

    proxy.stop()  # stage 2's RPC endpoint goes away while its claims come due
    swarm.pass_challenge_window()
    budget.wait_for(r"rpc \w+ failed \(ConnectionError\); retrying", timeout=60)
    proxy.start()
    for worker in workers:
        worker.wait_for(r"finalized \d+ claim\(s\) in one transaction", timeout=90)
    return {"workers": workers, "peer": peer, "final_digests": last["final_digests"]}


def check_ten_rounds(swarm: ChainSwarm, rounds: dict, keys: list[StageKey], tmp_path) -> None:
    protocol, model_id = swarm.protocol, swarm.model_id
    _, spec = spec_of_model(protocol, EmbeddedStore(tmp_path / "store"), model_id)
    units = spec.round_steps * spec.micro_batches
    reference = train_single_process(spec, 10, first_round=1, model_id=model_id)
    assert rounds["final_digests"] == reference.state_digests
    shares = protocol.shares(protocol.model(model_id))
    reader = EmbeddedStore(tmp_path / "store")  # a fresh handle: nothing cached from the workers
    for stage in range(3):
        claims = swarm.claims(stage)
        sizes = [c["lastRound"] - c["firstRound"] + 1 for c in claims]
        assert sizes == {0: [1] * 10, 1: [5, 5]}.get(stage, sizes), f"stage {stage}: rounds per claim"
        for previous, claim in zip([None, *claims], claims, strict=False):
            assert claim["previousClaimId"] == (previous["claimId"] if previous else 0), "chained on the lane"
            assert claim["parentCID"] == (previous["checkpointCID"] if previous else None)
            assert claim["workUnits"] == units * (claim["lastRound"] - claim["firstRound"] + 1)
            manifest = fetch_manifest(reader, claim["manifestCID"], bytes(claim["roundsRoot"]))
            assert [r.round for r in manifest.rounds] == list(
                range(claim["firstRound"], claim["lastRound"] + 1)
            )
            assert manifest.checkpoint.checkpoint_cid == claim["checkpointCID"]
            for record in manifest.rounds:
                fetch_trace(reader, keys[stage], record.trace_cid, record.trace_root)
        (run,) = swarm.events("ClaimsFinalized", modelId=model_id, worker=worker_account(stage).address)
        assert (run["claims"], run["firstClaimId"], run["lastClaimId"]) == (
            len(claims),
            claims[0]["claimId"],
            claims[-1]["claimId"],
        ), "every claim of the lane finalized in one transaction"
        assert run["sharesMinted"] == 10 * units * ETHER
        assert shares.functions.balanceOf(worker_account(stage).address).call() == 10 * units * ETHER
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        assert (cid_of(cid), round_) == (claims[-1]["checkpointCID"], 10)
        state = fetch_checkpoint(reader, keys[stage], cid_of(cid), bytes(digest))
        assert hashlib.sha256(state).hexdigest() == reference.state_digests[stage]
    print_gas(swarm)
    budget = [c["lastRound"] - c["firstRound"] + 1 for c in swarm.claims(2)]
    assert max(budget) <= 3 and min(budget) < 3, (
        "stage 2: three rounds a claim, fewer once the budget ran out"
    )


def print_gas(swarm: ChainSwarm) -> None:
    """Gas per claimed round for each worker's rounds-per-claim, from the receipts (pytest -s shows it;
    docs/roles/worker.md quotes it)."""
    eth = swarm.protocol.client.w3.eth
    for stage in range(3):
        worker = worker_account(stage).address
        events = swarm.claim_events(stage)
        submits = [eth.get_transaction_receipt(e["transactionHash"])["gasUsed"] for e in events]
        finalize = swarm.protocol.ledger.events.ClaimsFinalized().get_logs(
            argument_filters={"modelId": swarm.model_id, "worker": worker},
            from_block=events[0]["blockNumber"],
        )
        runs = [eth.get_transaction_receipt(e["transactionHash"])["gasUsed"] for e in finalize]
        sizes = [e["args"]["lastRound"] - e["args"]["firstRound"] + 1 for e in events]
        print(
            f"\nstage {stage}, rounds per claim {sizes}: submitClaim {submits}, finalize runs {runs}; "
            f"{(sum(submits) + sum(runs)) / sum(sizes):.0f} gas per round"
        )


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
            _, stderr = run.communicate(timeout=300)  # six processes start at once on 2 shared cores
            assert run.returncode != 0, expected
            assert expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
    finally:
        web.shutdown()
    assert creator.w3.eth.get_transaction_count(outsider.address) == 0, "a transaction was sent"


def test_cheat_changes_what_is_published_never_the_state_trained_on(chain, tmp_path):
    """--cheat (a test tool) runs each committed round through offchain.worker.cheats before it is stored:
    the stored round is refuted by a replay from the honest parent, while the journal keeps the
    honest state's digest (the one the swarm trains on, and the next round's parent); with
    --cheat-round only that round is altered."""
    url, deployments = chain
    swarm = ChainSwarm.create(url, deployments, tmp_path)
    account, store = worker_account(0), EmbeddedStore(tmp_path / "store")
    protocol = Protocol.load(ChainClient(url, account), deployments)
    _, spec = spec_of_model(protocol, store, swarm.model_id)
    honest = train_single_process(spec, 1, first_round=1, model_id=swarm.model_id)
    parent = StageTrainer(spec, 0, model_id=swarm.model_id).state_bytes()
    assert replay_round(spec, 0, parent, honest.traces[0], require_signatures=False).ok

    def keyed(worker: ChainWorker) -> StageKey:
        """Give `worker` a stage key as its first member would have (created now: nobody departed since)."""
        key = StageKey.generate(swarm.model_id, 0)
        worker.keyring.add(HeldKey(key, protocol.client.w3.eth.block_number))
        return key

    for mode in ("skip-steps", "fake-digest", "wrong-parent"):
        config = ChainWorkerConfig(swarm.model_id, 0, spec, tmp_path / mode, cheat=mode)
        worker = ChainWorker(config, protocol, store, account)
        key = keyed(worker)
        worker.publish(RoundState(1, parent), RoundState(2, honest.states[0]), honest.traces[0])
        (entry,) = worker.journal.rounds()
        assert entry.state_digest == hashlib.sha256(honest.states[0]).digest()
        assert entry.parent_digest == hashlib.sha256(parent).digest()
        published = entry.published
        assert published.checkpoint_digest != entry.state_digest, mode
        trace = fetch_trace(store, key, published.trace_cid, published.trace_root)
        assert not replay_round(spec, 0, parent, trace, require_signatures=False).ok, mode
    config = ChainWorkerConfig(
        swarm.model_id, 0, spec, tmp_path / "later", cheat="fake-digest", cheat_round=2
    )
    worker = ChainWorker(config, protocol, store, account)
    keyed(worker)
    worker.publish(RoundState(1, parent), RoundState(2, honest.states[0]), honest.traces[0])
    (entry,) = worker.journal.rounds()
    assert entry.published.checkpoint_digest == entry.state_digest, "--cheat-round 2: round 1 stays honest"
