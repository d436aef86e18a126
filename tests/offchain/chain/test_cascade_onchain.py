"""A refuted round on anvil with real `pm worker run` processes and a Kubo RPC (tests/offchain/storage's
fake Kubo: real CIDs, real HTTP): stage 1's only worker lies about round 3 (`--cheat fake-digest
--cheat-round 3`) and keeps training, so its claims of rounds 4 and 5 chain on the lie. A lane
holds at most four open claims here (maxPendingClaims), so every worker's round 5 waits (saying so
once) until its oldest claims finalize. Stage 1's validators challenge round 3 and vote it down:
it is slashed once, its claims of rounds 4 and 5 are voided in the same transaction with their
bonds released, and the worker goes back to round 2's checkpoint; its next claim is round 3 again,
started from that checkpoint, and finalizes.

Before that, the Kubo daemon is down while round 1 is published: every worker keeps its files in the
local spool and waits; no claim appears until the daemon is back and the spool drained. Stage 0's
worker dies (as by kill -9) once its round-3 claim is journaled but not sent; restarted, it sends
that claim, once."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from chain_testkit import advance_time, anvil_account
from worker_kit import DAY, ETHER, ChainSwarm, lean_spec, wait_until, worker_account

from offchain.chain.client import ChainClient
from offchain.chain.models import spec_of_model
from offchain.chain.status import model_status
from offchain.chain.structs import call_struct
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import fetch_checkpoint, fetch_manifest, fetch_trace
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.keyshare import StageKeyring, key_for_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from fake_kubo import FakeKubo  # a helper of the storage tests, not a package

pytestmark = pytest.mark.slow

CHALLENGER, VOTER = anvil_account(5), anvil_account(6)


def validators_of_stage_1(swarm: ChainSwarm) -> list:
    """Two validators of stage 1 with stake for the minimum, a challenge bond and a vote bond; past
    the registration delay."""
    params = swarm.parameters()
    ledgers = []
    for validator in (CHALLENGER, VOTER):
        client = ChainClient(swarm.rpc_url, validator)
        ledger = client.contract("WorkLedger", swarm.protocol.ledger.address)
        stake = params["minValidatorStake"] + params["claimBond"] + params["voteBond"]
        client.transact(ledger.functions.stake(), value=stake)
        client.transact(ledger.functions.registerValidator(swarm.model_id, 1))
        ledgers.append((client, ledger))
    advance_time(swarm.protocol.client, params["validatorDelay"] + 1)
    return ledgers


def test_a_refuted_round_voids_the_later_claims_and_the_lane_goes_on_from_round_2(chain, tmp_path):
    url, deployments = chain
    spec_path = lean_spec(tmp_path)
    swarm = ChainSwarm.create(url, deployments, tmp_path, spec_path)
    kubo = FakeKubo(tmp_path / "kubo").start()
    up = True
    try:
        swarm.set_parameters(challengeWindow=DAY, voteWindow=2 * DAY, quorum=1, maxPendingClaims=4)
        (challenger, challenger_ledger), (voter, voter_ledger) = validators_of_stage_1(swarm)
        model = swarm.protocol.model(swarm.model_id)
        kubo.store.put(EmbeddedStore(tmp_path / "store").get(model.spec_cid))  # where the workers read it
        ipfs = ["--ipfs-api", kubo.url]
        first = swarm.worker("worker0", 0, crash_at="after-prepare#3", extra=ipfs)
        boot = first.maddr()
        cheat = ["--cheat", "fake-digest", "--cheat-round", "3"]
        workers = [first, swarm.worker("worker1", 1, [boot], extra=[*ipfs, *cheat])]
        workers.append(swarm.worker("worker2", 2, [boot], extra=ipfs))
        for worker in workers[1:]:
            worker.maddr()

        kubo.stop()  # the daemon goes down: puts are spooled, nobody else could fetch them
        up = False
        swarm.summary(swarm.driver("driver1", 1, [boot]))
        for worker in workers:
            worker.wait_for(r"round 1 waits: 3 of its 3 files are only in the local spool", timeout=90)
        assert [swarm.claims(stage) for stage in range(3)] == [[], [], []]
        kubo.start()
        up = True
        for worker in workers:
            drained = worker.wait_for(r"the spool drained: round 1 can be fetched", timeout=60)
            submitted = worker.wait_for(r"round 1 submitted: claim \d+")
            assert drained.start() < submitted.start()
        for stage in range(3):
            (claim,) = swarm.claims(stage)
            manifest = fetch_manifest(kubo.store, claim["manifestCID"], bytes(claim["roundsRoot"]))
            assert all(
                kubo.store.has(cid) for r in manifest.rounds for cid in (r.checkpoint_cid, r.trace_cid)
            )

        driver = swarm.driver("driver2", 4, [boot])
        assert first.popen.wait(timeout=120) == 137, first.text()[-2000:]  # round 3's claim journaled, unsent
        assert re.search(r"round 3 \(swarm rounds 3\.\.3\) make one claim", first.text())
        boot = workers[1].maddr()
        workers[0] = swarm.worker("worker0-restart", 0, [boot], extra=ipfs)
        workers[0].wait_for(r"round 3 submitted: claim \d+", timeout=120)
        swarm.summary(driver)
        wait_until("stage 0's round 4 is claimed", lambda: len(swarm.rounds_claimed(0)) >= 4)
        assert swarm.rounds_claimed(0) == [1, 2, 3, 4], "the journaled claim sent once after the crash"
        for worker in workers:
            worker.wait_for(
                r"4 claims open, the most a lane may hold \(maxPendingClaims\): round 5 waits", 60
            )
        lied = swarm.claims(1)
        assert [c["firstRound"] for c in lied] == [1, 2, 3, 4]
        refuted = lied[2]["claimId"]
        challenger.transact(challenger_ledger.functions.challenge(refuted, 3, 1, b"\x07" * 32))
        workers[1].wait_for(r"round 3 challenged: claim \d+, round 3 step 1", timeout=60)

        swarm.pass_challenge_window()  # rounds 1..4 due; stage 1's round 3 is disputed, 4 waits behind it
        workers[1].wait_for(r"finalized 2 claim\(s\) in one transaction \(rounds 1\.\.2\)", timeout=60)
        for worker in (workers[0], workers[2]):
            worker.wait_for(r"finalized 4 claim\(s\) in one transaction \(rounds 1\.\.4\)", timeout=60)
        for worker in workers:
            worker.wait_for(r"the lane has room again: sending round 5", timeout=60)
            worker.wait_for(r"round 5 submitted: claim \d+", timeout=60)
            assert worker.text().count("the most a lane may hold") == 1, "said once"
        voter.transact(voter_ledger.functions.vote(refuted, False))
        voter.transact(voter_ledger.functions.resolve(refuted))
        workers[1].wait_for(r"round 3 rejected: claim \d+, no shares", timeout=60)
        workers[1].wait_for(r"round 3 slashed: claim \d+, bond of \d+ wei lost")
        workers[1].wait_for(r"voided 2 later open claim\(s\) of the lane")
        workers[1].wait_for(r"round 5 voided: claim \d+")
        workers[1].wait_for(r"stage 1 back to the finalized checkpoint of round 2", timeout=60)

        swarm.summary(swarm.driver("driver3", 1, [boot]))
        workers[1].wait_for(r"round 3 submitted: claim \d+, chained on the finalized checkpoint", timeout=60)
        for worker in (workers[0], workers[2]):
            worker.wait_for(r"round 6 submitted: claim \d+", timeout=60)
        swarm.pass_challenge_window()
        workers[1].wait_for(r"finalized 1 claim\(s\) in one transaction \(rounds 3\.\.3\)", timeout=60)
        for worker in (workers[0], workers[2]):
            worker.wait_for(r"finalized 2 claim\(s\) in one transaction \(rounds 5\.\.6\)", timeout=60)
        for worker in workers:
            worker.stop()
            assert worker.popen.returncode == 0, worker.text()[-2000:]
    finally:
        swarm.close()
        if up:
            kubo.stop()

    cheater = worker_account(1).address
    params = swarm.parameters()
    (slash,) = [event for event in swarm.events("Slashed") if event["account"] == cheater]
    assert slash["amount"] == params["claimBond"], "slashed once, one bond"
    (cascade,) = swarm.events("LaneVoided", modelId=swarm.model_id, worker=cheater)
    assert (cascade["rejectedClaimId"], cascade["voidedClaims"]) == (refuted, 2)
    assert cascade["bondsReleased"] == 2 * params["claimBond"]
    ledger = swarm.protocol.ledger
    account = call_struct(swarm.protocol.client, ledger.functions.stakeOf(cheater))
    assert account["locked"] == 0, "no bond stays locked: voided bonds released, the new claim finalized"

    again = swarm.claims(1)[-1]
    assert (again["firstRound"], again["lastRound"], again["previousClaimId"]) == (3, 3, 0)
    assert again["parentCID"] == lied[1]["checkpointCID"], "round 3 again, from round 2's checkpoint"
    keyring = StageKeyring(swarm.state_dir(1) / f"stage-keys-model{swarm.model_id}-stage1", swarm.model_id, 1)
    _, spec = spec_of_model(swarm.protocol, kubo.store, swarm.model_id)
    manifest = fetch_manifest(kubo.store, again["manifestCID"], bytes(again["roundsRoot"]))
    (record,) = manifest.rounds
    key = key_for_checkpoint(keyring, kubo.store, record.trace_cid)  # each ciphertext names its key
    trace = fetch_trace(kubo.store, key, record.trace_cid, record.trace_root)
    assert (record.round, trace.round) == (3, 6), "lineage round 3, trained in swarm round 6"
    parent_cid = lied[1]["checkpointCID"]
    parent_key = key_for_checkpoint(keyring, kubo.store, parent_cid)
    parent = fetch_checkpoint(kubo.store, parent_key, parent_cid, bytes(lied[1]["checkpointDigest"]))
    deployment = (swarm.protocol.client.chain_id, swarm.protocol.ledger.address.lower())
    report = replay_round(spec, 1, parent, trace, deployment=deployment)
    assert report.ok, "it really trained from round 2's checkpoint"

    units = spec.round_steps * spec.micro_batches
    shares = swarm.protocol.shares(swarm.protocol.model(swarm.model_id))
    assert shares.functions.balanceOf(cheater).call() == 3 * units * ETHER, "rounds 1, 2 and the new 3"
    for stage in (0, 2):
        assert shares.functions.balanceOf(worker_account(stage).address).call() == 6 * units * ETHER
    claims = model_status(swarm.protocol, swarm.model_id)["claims"]
    assert (claims["rejected"], claims["voided"], claims["voided_rounds"], claims["pending"]) == (1, 2, 2, 0)
    assert claims["finalized"] == 6 + 6 + 3
