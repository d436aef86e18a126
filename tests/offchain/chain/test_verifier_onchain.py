"""`pm verifier run` as real processes against anvil, an embedded store and stage members serving
keys over hivemind: real rounds of the tiny model are published and claimed; honest claims are
never challenged and get finalized; every cheat mode is challenged at its step, voted invalid,
resolved, and its worker slashed by exactly the bond with no shares minted; a verifier killed
mid-replay finishes the claim after a restart without voting twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from chain_testkit import REPO, advance_time
from stage_members import serving_stage_keys
from verifier_kit import ETHER, VALIDATORS, WORKERS, Network, seed_states

from offchain.chain.client import ChainClient
from offchain.chain.protocol import ClaimStatus


@pytest.fixture
def network(chain, tmp_path):
    url, deployments = chain
    net = Network(url, deployments, REPO / "specs" / "tiny.json", tmp_path)
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        yield net


def _assert_slashed(net: Network, claim_id: int, worker: int, step: int, staked_before: int) -> None:
    (challenged,) = net.events("ClaimChallenged", claim_id)
    assert challenged["stepIndex"] == step
    evidence = json.loads(net.store.get(challenged["evidenceCID"]))
    assert evidence["verdict"]["step"] == step and evidence["verdict"]["valid"] is False
    assert [vote["claimValid"] for vote in net.events("VoteCast", claim_id)] == [False]
    (resolved,) = net.events("ClaimResolved", claim_id)
    assert (resolved["outcome"], resolved["slashed"]) == (ClaimStatus.REJECTED, True)
    slashed = [e for e in net.events("Slashed") if e["account"] == WORKERS[worker].address]
    assert [e["amount"] for e in slashed] == [net.bond]
    assert net.ledger.functions.stakeOf(WORKERS[worker].address).call()[0] == staked_before - net.bond


@pytest.mark.slow
def test_honest_claims_finalize_and_every_cheat_is_slashed(network):
    net = network
    spec, units = net.spec, net.spec.round_steps * net.spec.micro_batches
    seeds = seed_states(spec)
    staked = [net.ledger.functions.stakeOf(w.address).call()[0] for w in WORKERS]
    verifiers = [net.verifier(f"verifier-{i}", v) for i, v in enumerate(VALIDATORS)]
    try:
        first = net.train(1, seeds)
        for verifier in verifiers:
            verifier.wait_for("watching claims")
        honest = net.claim(0, seeds[0], first.states[0], first.traces[0])
        skipper = net.claim(1, seeds[1], first.states[1], first.traces[1], cheat="skip-steps")
        faker = net.claim(2, seeds[2], first.states[2], first.traces[2], cheat="fake-digest")
        both = tuple(verifiers)

        def cheats_rejected():
            """both cheating claims rejected"""
            return net.status(skipper) == net.status(faker) == ClaimStatus.REJECTED

        def honest_judged():
            """both verifiers judged the honest claim valid"""
            pattern = rf"verdict claim={honest} model={net.model_id} stage=0 round=1 result=valid step=-"
            return all(re.search(pattern, v.text()) for v in verifiers)

        net.wait(cheats_rejected, processes=both)
        net.wait(honest_judged, processes=both)
        advance_time(net.reader, net.ledger.functions.parameters().call()[0] + 1)
        net.wait(lambda: net.status(honest) == ClaimStatus.FINALIZED, processes=both)

        _assert_slashed(net, skipper, 1, spec.round_steps // 2, staked[1])
        _assert_slashed(net, faker, 2, spec.round_steps - 1, staked[2])
        assert net.events("ClaimChallenged", honest) == []
        shares = net.protocol.shares(net.protocol.model(net.model_id))
        balances = [shares.functions.balanceOf(w.address).call() for w in WORKERS]
        assert balances == [units * ETHER, 0, 0]

        # Round 2: stage 0 trained from a parent other than its finalized checkpoint; stage 1 goes
        # on from its last honest checkpoint (the seed: its round 1 was rejected) and is accepted.
        net.workers[1].transact(net.ledgers[1].functions.stake(), value=net.bond)
        second = net.train(2, [first.states[0], seeds[1], seeds[2]])
        wrong = net.claim(0, first.states[0], second.states[0], second.traces[0], cheat="wrong-parent")
        resumed = net.claim(1, seeds[1], second.states[1], second.traces[1])
        net.wait(lambda: net.status(wrong) == ClaimStatus.REJECTED, processes=both)
        _assert_slashed(net, wrong, 0, 0, staked[0])
        net.wait(lambda: all(f"verdict claim={resumed} " in v.text() for v in verifiers), processes=both)
        advance_time(net.reader, net.ledger.functions.parameters().call()[0] + 1)
        net.wait(lambda: net.status(resumed) == ClaimStatus.FINALIZED, processes=both)
        assert net.protocol.registry.functions.checkpointOf(net.model_id, 1).call()[2] == 2

        for verifier in verifiers:
            text = verifier.text()
            assert "AlreadyVoted" not in text and "Traceback" not in text
            line = re.search(rf"verdict claim={faker} .*", text).group(0)
            assert f"stage=2 round=1 result=INVALID step={spec.round_steps - 1}" in line
            assert re.search(r"expected=[0-9a-f]{64} actual=[0-9a-f]{64}", line)
    finally:
        for verifier in verifiers:
            verifier.stop()


@pytest.mark.slow
def test_verifier_killed_mid_replay_finishes_after_restart_without_voting_twice(chain, tmp_path):
    """A longer round (so its replay takes a while) is challenged by a validator; a verifier that
    samples nothing but judges every dispute is killed while replaying it, restarted, and votes once."""
    url, deployments = chain
    spec_path = tmp_path / "long.json"
    tiny = json.loads((REPO / "specs" / "tiny.json").read_text())
    spec_path.write_text(json.dumps({**tiny, "round_steps": 24}))
    net = Network(url, deployments, spec_path, tmp_path)
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        voter = net.verifier("voter-1", VALIDATORS[1], "--probability", "0")
        try:
            seeds = seed_states(net.spec)
            first = net.train(1, seeds)
            claim_id = net.claim(2, seeds[2], first.states[2], first.traces[2], cheat="fake-digest")
            challenger = ChainClient(url, VALIDATORS[0])
            ledger = challenger.contract("WorkLedger", net.ledger.address)
            challenger.transact(
                ledger.functions.stake(), value=net.ledger.functions.parameters().call()[8] + net.bond
            )
            challenger.transact(ledger.functions.registerValidator())
            last_step = net.spec.round_steps - 1
            challenger.transact(
                ledger.functions.challenge(claim_id, last_step, "QmEvidenceOfTheTestValidator")
            )

            replaying = rf"claim {claim_id} \(stage 2 round 1\): replaying"
            deadline = time.monotonic() + 120
            while not re.search(replaying, voter.text()):  # poll fast: the kill must land mid-replay
                assert time.monotonic() < deadline and voter.popen.poll() is None, voter.text()[-3000:]
                time.sleep(0.02)
            voter.kill9()
            journal = json.loads((tmp_path / f"state-{VALIDATORS[1].address}" / "journal.json").read_text())
            assert journal["entries"][str(claim_id)]["verdict"] is None  # it died before deciding
            assert net.events("VoteCast", claim_id) == []

            voter = net.verifier("voter-2", VALIDATORS[1], "--probability", "0")
            net.wait(lambda: net.status(claim_id) == ClaimStatus.REJECTED, processes=(voter,))
            votes = net.events("VoteCast", claim_id)
            assert [(v["validator"], v["claimValid"]) for v in votes] == [(VALIDATORS[1].address, False)]
            assert "AlreadyVoted" not in voter.text()
            assert re.search(
                rf"voted claim {claim_id} invalid \(disputed step {last_step}, my first", voter.text()
            )
        finally:
            voter.stop()


def test_bad_input_is_one_line_and_a_nonzero_exit(chain, tmp_path):
    url, deployments = chain
    key_file = tmp_path / "key"
    key_file.write_text(VALIDATORS[0].key.hex())
    common = ["--rpc-url", url, "--deployments", str(deployments), "--key-file", str(key_file)]
    peers = ["--initial-peers", "/ip4/127.0.0.1/tcp/1/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"]
    cases = {
        "must be between 0 and 1": [*common, *peers, "--probability", "1.5"],
        "needs --initial-peers": common,
        "unknown model id 42": [*common, *peers, "--model", "42"],
        "not an address": [*common, *peers, "--driver", "0x1234"],
        "cannot reach the RPC URL": [*peers, "--rpc-url", "http://127.0.0.1:9", "--key-file", str(key_file)],
    }
    command = [sys.executable, "-m", "offchain.cli", "verifier", "run"]
    runs = {
        message: subprocess.Popen([*command, *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for message, args in cases.items()
    }
    for message, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        assert run.returncode != 0, message
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (message, stderr)
