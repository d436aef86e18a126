"""`pm verifier run --stage` as real processes against anvil, an embedded store and stage members
serving keys over hivemind, on WorkLedger v2: two validators of stage 1 replay every round of its
claims; a 2-round claim lying about its second round is challenged at that (round, step), voted
down and slashed once, and the claim chained on it is voided, never challenged; an honest 2-round
claim finalizes and mints its work units, while its copy by another member of the stage (audit
F6) is refuted at its first message, rejected and slashed; a stage-2 claim is none of their
business (and the chain refuses their challenge of it). A decoy challenge naming the honest round
of a lying 2-round claim does not save it: voters that sampled nothing judge every round before
voting. Withheld content is challenged as Unavailable and slashed, while content that was only
slow is upheld. A voter killed -9 mid-replay votes once after its restart; a validator registered
after the challenge does not vote. The peer the verifiers joined through killed -9: the running one
still challenges a lie, one started meanwhile waits (saying so) and joins once it is back."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from chain_testkit import REPO, advance_time, anvil_account, free_port
from stage_members import serving_stage_keys
from verifier_kit import ETHER, VALIDATORS, WORKERS, Network, seed_states

from offchain.chain.client import ChainClient, ContractRevert
from offchain.chain.protocol import ChallengeKind, ClaimStatus
from offchain.chain.status import cid_of
from offchain.chain.structs import call_struct
from offchain.crash import CRASH_ENV
from offchain.proofs.rounds import publish_round
from offchain.storage.embedded import EmbeddedStore

LATE_VALIDATOR = anvil_account(8)  # registers after a challenge (no other role on the test chain)


@pytest.fixture
def network(chain, tmp_path):
    url, deployments = chain
    net = Network(url, deployments, REPO / "specs" / "tiny.json", tmp_path)
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        yield net


def _both_validate_stage_1(net: Network, *extra: str):
    verifiers = tuple(net.verifier(f"verifier-{i}", v, 1, *extra) for i, v in enumerate(VALIDATORS))
    for verifier in verifiers:
        verifier.wait_for("watching claims")
    return verifiers


def _stop(processes) -> str:
    for process in processes:
        process.stop()
    return "\n".join(process.text() for process in processes)


@pytest.mark.slow
def test_a_lie_inside_a_multi_round_claim_is_slashed_once_and_voids_the_lane_after_it(network):
    """Also audit F6: another member of stage 1 submits the ClaimInput of the honest worker's claim,
    copied from its ClaimSubmitted event. The trace's messages are addressed to the honest worker,
    so the copy is refuted at its first message, rejected and slashed; the honest claim finalizes."""
    net = network
    seeds = seed_states(net.spec)
    liar, copier = net.member("liar", net.model_id, 1), net.member("copier", net.model_id, 1)
    first = net.train(1, seeds)
    second = net.train(2, first.states)
    honest = [
        net.publish(1, seeds[1], first.states[1], first.traces[1]),
        net.publish(1, first.states[1], second.states[1], second.traces[1]),
    ]
    own = {1: liar.address}  # the liar trains its own rounds: their messages are addressed to it
    mine = [net.train(1, seeds, own), net.train(2, first.states, own), net.train(3, second.states, own)]
    starts = [seeds[1], first.states[1], second.states[1]]
    liars = [net.publish(1, start, r.states[1], r.traces[1]) for start, r in zip(starts, mine, strict=True)]
    skipped = net.publish(1, first.states[1], mine[1].states[1], mine[1].traces[1], cheat="skip-steps")
    staked_before = net.staked(liar.account)
    verifiers = _both_validate_stage_1(net)
    try:
        lie = net.claim(liar, [liars[0], skipped])
        chained = net.claim(liar, [liars[2]])
        fair = net.claim(net.workers[1], honest)
        copy = net.copy_claim(copier, fair)
        faked = net.publish(2, seeds[2], first.states[2], first.traces[2], cheat="fake-digest")
        other_stage = net.claim(net.workers[2], [faked])
        stage_1_validator = ChainClient(net.url, VALIDATORS[0])
        ledger = stage_1_validator.contract("WorkLedger", net.ledger.address)
        with pytest.raises(ContractRevert, match="NotStageValidator"):
            stage_1_validator.transact(ledger.functions.challenge(other_stage, 1, 0, b"\x01" * 32))
        rejected = (lie, copy)
        net.wait(lambda: all(net.status(c) == ClaimStatus.REJECTED for c in rejected), processes=verifiers)
        net.wait(lambda: all(f"verdict claim={fair} " in v.text() for v in verifiers), processes=verifiers)
        advance_time(net.reader, net.params["challengeWindow"] + 1)
        net.wait(lambda: net.status(fair) == ClaimStatus.FINALIZED, processes=verifiers)
        net.wait(lambda: all(net.events("VoteSettled", c) for c in rejected), processes=verifiers)
    finally:
        logs = _stop(verifiers)

    step = net.spec.round_steps // 2  # skip-steps: the first step it skipped
    (challenged,) = net.events("ClaimChallenged", lie)
    where = (challenged["kind"], challenged["round"], challenged["stepIndex"])
    assert where == (ChallengeKind.DIVERGENCE, 2, step)
    evidence = json.loads(net.store.get(cid_of(challenged["evidenceCID"])))
    assert (evidence["verdict"]["round"], evidence["verdict"]["step"]) == (2, step)
    assert evidence["round_record"]["trace_cid"] == skipped.trace_cid and evidence["round_proof"]
    assert [vote["claimValid"] for vote in net.events("VoteCast", lie)] == [False]
    slashed = [e["amount"] for e in net.events("Slashed") if e["account"] == liar.address]
    assert slashed == [net.params["claimBond"]]
    assert net.staked(liar.account) == staked_before - net.params["claimBond"]
    (voided,) = net.events("LaneVoided")
    assert (voided["rejectedClaimId"], voided["voidedClaims"]) == (lie, 1)
    assert net.status(chained) == ClaimStatus.VOIDED and net.events("ClaimChallenged", chained) == []
    assert f"verdict claim={chained} " not in logs  # it waited behind the refuted claim, then was voided
    assert net.events("ClaimChallenged", fair) == [] and net.events("ClaimChallenged", other_stage) == []
    assert f"claim={other_stage} " not in logs and f"claim {other_stage}" not in logs
    (copied,) = net.events("ClaimChallenged", copy)
    assert (copied["kind"], copied["round"], copied["stepIndex"]) == (ChallengeKind.DIVERGENCE, 1, 0)
    reason = json.loads(net.store.get(cid_of(copied["evidenceCID"])))["verdict"]["reason"]
    assert reason == (
        f"forward message of micro-batch 0 is addressed to {WORKERS[1].address.lower()}, "
        f"not the claiming worker {copier.address.lower()}"
    )
    slashed = [e["amount"] for e in net.events("Slashed") if e["account"] == copier.address]
    assert slashed == [net.params["claimBond"]]
    shares = net.protocol.shares(net.protocol.model(net.model_id))
    units = 2 * net.spec.round_steps * net.spec.micro_batches
    assert shares.functions.balanceOf(WORKERS[1].address).call() == units * ETHER
    assert shares.functions.balanceOf(copier.address).call() == 0
    assert "Traceback" not in logs and "AlreadyVoted" not in logs


@pytest.mark.slow
def test_a_decoy_challenge_of_an_honest_round_does_not_save_a_lie_in_another(network):
    """Audit F7. A claim is challenged once, so a liar's friend, a validator of the stage registered
    before the claim, challenges first and names round 1 of a 2-round claim: an honest round; round 2
    is the lie. The verifiers sample nothing (probability 0), so they only vote, and a vote is on the
    claim: each judges both rounds, votes invalid, and the claim is rejected, its worker slashed. The
    contract rules on the claim, not on the challenge's evidence: the decoy challenger is on the
    winning side, gets its bond back and the liar's bond minus burnBps (the friend's gain is the
    liar's loss, so the pair gains nothing)."""
    net = network
    seeds = seed_states(net.spec)
    liar, friend = net.member("liar", net.model_id, 1), net.account("friend")
    own = {1: liar.address}  # the liar's own rounds: their messages are addressed to it
    first = net.train(1, seeds, own)
    second = net.train(2, first.states, own)
    honest = net.publish(1, seeds[1], first.states[1], first.traces[1])
    lie = net.publish(1, first.states[1], second.states[1], second.traces[1], cheat="skip-steps")
    friend_ledger = net.validator(friend, 1)
    verifiers = _both_validate_stage_1(net, "--probability", "0")
    try:
        claim_id = net.claim(liar, [honest, lie])
        staked = {who.address: net.staked(who.account) for who in (liar, friend)}
        friend.transact(friend_ledger.functions.challenge(claim_id, 1, 0, b"\x01" * 32))
        settled = (ClaimStatus.REJECTED, ClaimStatus.UPHELD, ClaimStatus.FINALIZED)
        net.wait(lambda: net.status(claim_id) in settled, timeout=300, processes=verifiers)
        for verifier in verifiers:  # a vote is mined before its voter logs it
            verifier.wait_for(rf"voted claim {claim_id} ")
    finally:
        logs = _stop(verifiers)

    assert net.status(claim_id) == ClaimStatus.REJECTED, logs[-3000:]
    votes = {(v["validator"], v["claimValid"]) for v in net.events("VoteCast", claim_id)}
    assert votes == {(v.address, False) for v in VALIDATORS}
    step = net.spec.round_steps // 2  # skip-steps: the first step it skipped
    assert len(re.findall(rf"voted claim {claim_id} invalid \(disputed: divergence round 1;", logs)) == 2
    assert len(re.findall(rf"verdict claim={claim_id} .*result=INVALID round=2 step={step} ", logs)) == 2
    bond, burn = net.params["claimBond"], net.params["burnBps"]
    (slashed,) = [e for e in net.events("Slashed") if e["account"] == liar.address]
    assert (slashed["amount"], slashed["winner"]) == (bond, friend.address)
    assert net.staked(liar.account) == staked[liar.address] - bond
    assert net.staked(friend.account) == staked[friend.address] + bond - bond * burn // 10_000
    assert call_struct(net.reader, net.ledger.functions.stakeOf(friend.address))["locked"] == 0
    assert "Traceback" not in logs and "AlreadyVoted" not in logs


def _copy(source: EmbeddedStore, cids, target: EmbeddedStore) -> None:
    for cid in cids:
        car = io.BytesIO()
        source.export_car(cid, car)
        car.seek(0)
        target.import_car(car)


@pytest.mark.slow
def test_withheld_content_is_slashed_and_slow_content_is_upheld(network, tmp_path):
    net = network
    seeds = seed_states(net.spec)
    withholder, late = net.member("withholder", net.model_id, 1), net.member("late", net.model_id, 1)
    first = net.train(1, seeds, {1: late.address})  # the slow worker's own round
    elsewhere = EmbeddedStore(tmp_path / "elsewhere")  # a worker's own node, never reached
    state, trace = first.states[1], first.traces[1]
    hidden = net.publish(1, seeds[1], state, trace)
    withheld = replace(hidden, trace_cid=elsewhere.put(b"a trace nobody will ever serve"))
    slow = publish_round(elsewhere, net.keys[1], state, trace)
    _copy(elsewhere, [slow.checkpoint_cid], net.store)  # its trace comes only after the challenge
    verifiers = _both_validate_stage_1(net)
    try:
        gone, slow_claim = net.claim(withholder, [withheld]), net.claim(late, [slow])
        advance_time(net.reader, net.params["availabilityGrace"] + 1)
        both = (gone, slow_claim)
        net.wait(lambda: all(net.events("ClaimChallenged", c) for c in both), processes=verifiers)
        _copy(elsewhere, [slow.trace_cid], net.store)  # it was only slow: now anyone can fetch it
        net.wait(lambda: net.status(slow_claim) == ClaimStatus.FINALIZED, processes=verifiers)
        advance_time(net.reader, net.params["voteWindow"] // 2 + 1)  # the voter stops waiting for it
        net.wait(lambda: net.status(gone) == ClaimStatus.REJECTED, processes=verifiers)
    finally:
        logs = _stop(verifiers)

    for claim_id in (gone, slow_claim):
        (challenge,) = net.events("ClaimChallenged", claim_id)
        assert challenge["kind"] == ChallengeKind.UNAVAILABLE
    assert [v["claimValid"] for v in net.events("VoteCast", gone)] == [False]
    assert [v["claimValid"] for v in net.events("VoteCast", slow_claim)] == [True]
    slashed = {e["account"]: e["amount"] for e in net.events("Slashed")}
    (slow_challenge,) = net.events("ClaimChallenged", slow_claim)
    assert slashed[withholder.address] == net.params["claimBond"]
    assert slow_challenge["challenger"] in slashed and late.address not in slashed
    assert re.search(rf"verdict claim={gone} .*result=INVALID \(withheld\).*block Qm\w+ not found", logs)
    assert "Traceback" not in logs


@pytest.mark.slow
def test_verifier_killed_mid_replay_finishes_after_restart_without_voting_twice(chain, tmp_path):
    """A longer round (so its replay takes a while) is challenged by a validator; a verifier that
    samples nothing but judges every dispute of its stage is killed while replaying it, restarted,
    and votes once. A validator that registered after the challenge is not in the dispute's
    electorate: it says so once and sends no vote."""
    url, deployments = chain
    spec_path = tmp_path / "long.json"
    tiny = json.loads((REPO / "specs" / "tiny.json").read_text())
    spec_path.write_text(json.dumps({**tiny, "round_steps": 24}))
    net = Network(url, deployments, spec_path, tmp_path)
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        # It dies mid-replay, as under kill -9, exactly once the replay is journaled as started.
        voter = net.verifier("voter-1", VALIDATORS[1], 2, "--probability", "0", env={CRASH_ENV: "mid-replay"})
        voter.wait_for("watching claims")  # registered: it may vote on disputes opened from now on
        late = None
        try:
            seeds = seed_states(net.spec)
            first = net.train(1, seeds)
            published = net.publish(2, seeds[2], first.states[2], first.traces[2], cheat="fake-digest")
            claim_id = net.claim(net.workers[2], [published])
            challenger = ChainClient(url, VALIDATORS[0])
            ledger = net.validator(challenger, 2)
            last_step = net.spec.round_steps - 1
            challenger.transact(ledger.functions.challenge(claim_id, 1, last_step, b"\x01" * 32))
            late = net.verifier("late", LATE_VALIDATOR, 2, "--probability", "0")

            assert voter.popen.wait(timeout=120) == 137, voter.text()[-3000:]
            assert re.search(rf"claim {claim_id} \(stage 2 round 1\): replaying", voter.text())
            state_dir = tmp_path / f"state-{net.model_id}-{VALIDATORS[1].address}"
            journal = json.loads((state_dir / "journal.json").read_text())
            entry = journal["entries"][str(claim_id)]
            assert entry["verdict"] is None and entry["replays"] == 1  # it died mid-replay
            assert net.events("VoteCast", claim_id) == []

            voter = net.verifier("voter-2", VALIDATORS[1], 2, "--probability", "0")
            net.wait(lambda: net.status(claim_id) == ClaimStatus.REJECTED, processes=(voter,))
            votes = net.events("VoteCast", claim_id)
            assert [(v["validator"], v["claimValid"]) for v in votes] == [(VALIDATORS[1].address, False)]
            # The vote is mined before the voter logs it, and anyone may resolve then: wait for the line.
            voter.wait_for(rf"voted claim {claim_id} invalid \(disputed: divergence round 1;")
            assert "AlreadyVoted" not in voter.text()
            late.wait_for(rf"not voting on claim {claim_id}: registered after it was challenged")
            assert late.text().count("not voting on claim") == 1 and "vote skipped" not in late.text()
        finally:
            voter.stop()
            if late is not None:
                late.stop()


ENTRY = """
import asyncio, sys
from pathlib import Path
from offchain.swarm.identity import p2p_identity
from offchain.swarm.node import NetworkConfig, start_node, visible_maddrs

async def main():
    network = NetworkConfig(initial_peers=(sys.argv[1],), host_maddrs=(sys.argv[2],))
    node = await start_node(network, identity_path=p2p_identity(Path(sys.argv[3])))
    print((await visible_maddrs(node))[0], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _entry(members: str, port: int, identity: Path) -> tuple[subprocess.Popen, str]:
    """The swarm's entry peer (a DHT node on a port and identity of its own, as the demo's workers are,
    joined through the stage members at `members`): its process and multiaddr."""
    args = [sys.executable, "-c", ENTRY, members, f"/ip4/127.0.0.1/tcp/{port}", str(identity)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return process, process.stdout.readline().strip()


def _kill9(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_verifier_rides_out_the_death_of_the_peer_it_joined_through(network):
    """The peer every daemon was given as --initial-peers is killed -9: the verifier that joined
    through it still gets the stage key from the swarm and challenges a lie; one started while the
    entry is down says so in its log and waits (no silent exit), and joins once the entry is back
    at its address."""
    net, members, port = network, network.maddr, free_port()
    entry, net.maddr = _entry(members, port, net.tmp / "entry.key")  # the verifiers' --initial-peers
    verifiers = []
    try:
        verifiers.append(net.verifier("joined", VALIDATORS[0], 1))
        verifiers[0].wait_for("watching claims")
        _kill9(entry)
        verifiers.append(net.verifier("restarted", VALIDATORS[1], 1))
        verifiers[1].wait_for(r"WARN offchain\.swarm\.node: none of the initial peers answers \(/ip4/127")
        seeds = seed_states(net.spec)
        first = net.train(1, seeds)
        lie = net.publish(1, seeds[1], first.states[1], first.traces[1], cheat="fake-digest")
        claim_id = net.claim(net.workers[1], [lie])
        net.wait(lambda: net.status(claim_id) == ClaimStatus.CHALLENGED, processes=tuple(verifiers))
        verifiers[0].wait_for(rf"challenged claim {claim_id} at round 1")  # logged after the receipt
        entry, back = _entry(members, port, net.tmp / "entry.key")
        assert back == net.maddr  # the same port and identity: the same address
        verifiers[1].wait_for(r"joined the swarm after waiting \d+s for an initial peer")
        verifiers[1].wait_for("watching claims")
        assert verifiers[1].text().count("none of the initial peers answers") == 1
        assert all(verifier.popen.poll() is None for verifier in verifiers)
    finally:
        if entry.poll() is None:
            _kill9(entry)
        _stop(verifiers)


def test_bad_input_is_one_line_and_a_nonzero_exit(chain, tmp_path):
    url, deployments = chain
    key_file = tmp_path / "key"
    key_file.write_text(VALIDATORS[0].key.hex())
    common = ["--rpc-url", url, "--deployments", str(deployments), "--key-file", str(key_file)]
    peers = ["--initial-peers", "/ip4/127.0.0.1/tcp/1/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"]
    net = Network(url, deployments, REPO / "specs" / "tiny.json", tmp_path)
    model = ["--model", str(net.model_id)]
    worker = tmp_path / "worker.key"
    worker.write_text(WORKERS[0].key.hex())
    cases = {
        "must be between 0 and 1": [*common, *peers, *model, "--stage", "1", "--probability", "1.5"],
        "needs --initial-peers": [*common, *model, "--stage", "1"],
        "unknown model id 42": [*common, *peers, "--model", "42", "--stage", "0"],
        "stage 3 out of range: model": [*common, *peers, *model, "--stage", "3"],
        "not an address": [*common, *peers, *model, "--stage", "1", "--driver", "0x1234"],
        "cannot reach the RPC URL": [
            *peers,
            *model,
            "--stage",
            "1",
            "--rpc-url",
            "http://127.0.0.1:9",
            *common[-2:],
        ],
        "works stage 0 of model 1: an address holds one stage": [
            *common[:-1],
            str(worker),
            *peers,
            *model,
            "--stage",
            "1",
        ],
    }
    command = [sys.executable, "-m", "offchain.cli", "verifier", "run"]
    runs = {
        message: subprocess.Popen([*command, *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for message, args in cases.items()
    }
    for message, run in runs.items():
        _, stderr = run.communicate(timeout=180)
        assert run.returncode != 0, message
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (message, stderr)
