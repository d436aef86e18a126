"""Judging claims without a chain: an honest claim is valid; every cheat is refuted at its step;
signatures must come from the neighbour stages; a replica's claim is valid exactly when its digest
is the average of its group's replayed end states, and undecided while replicas are missing."""

import dataclasses
from pathlib import Path

import pytest
from rounds_kit import claim_for, make_signer, replica_round, throwaway

from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.verifier.check import judge_group, replay_claim
from offchain.worker.cheats import apply_cheat

SPEC = load_spec(Path(__file__).resolve().parents[3] / "specs" / "tiny.json")
DRIVER = throwaway("driver")
STAGES = [throwaway(f"stage{s}") for s in range(3)]
MALLORY = throwaway("mallory")
WORKERS = [account.address for account in STAGES]
SECOND = throwaway("stage1-replica").address


def _signers(stage):
    forward = {DRIVER.address} if stage == 0 else {STAGES[stage - 1].address}
    backward = {STAGES[stage + 1].address} if stage < 2 else set()
    return {"forward": forward, "backward": backward}


@pytest.fixture(scope="module")
def rounds():
    sign = make_signer(DRIVER, STAGES)
    first = train_single_process(SPEC, 1, sign=sign, recipients=WORKERS)
    second = train_single_process(SPEC, 1, first_round=1, states=first.states, sign=sign, recipients=WORKERS)
    return first.states, second


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_honest_claim_is_valid(rounds, stage):
    parents, honest = rounds
    claim = claim_for(honest.states[stage], honest.traces[stage], WORKERS[stage])
    replayed = replay_claim(SPEC, claim, parents[stage], honest.traces[stage], signers=_signers(stage))
    assert replayed.verdict.valid is True
    assert replayed.verdict.steps_checked == SPEC.round_steps
    assert replayed.state == honest.states[stage]


@pytest.mark.parametrize(
    ("mode", "step"),
    [("skip-steps", SPEC.round_steps // 2), ("fake-digest", SPEC.round_steps - 1), ("wrong-parent", 0)],
)
def test_each_cheat_is_refuted_at_its_step(rounds, mode, step):
    parents, honest = rounds
    state, trace = apply_cheat(mode, SPEC, parents[1], honest.states[1], honest.traces[1])
    claim = claim_for(state, trace, WORKERS[1])
    verdict = replay_claim(SPEC, claim, parents[1], trace, signers=_signers(1)).verdict
    assert (verdict.valid, verdict.round, verdict.step) == (False, claim.round, step)
    assert verdict.expected != verdict.actual


def test_claim_details_must_match_the_trace(rounds):
    parents, honest = rounds
    claim = claim_for(honest.states[2], honest.traces[2], WORKERS[2])
    inflated = dataclasses.replace(claim, work_units=claim.work_units + 1)
    verdict = replay_claim(SPEC, inflated, parents[2], honest.traces[2], signers=_signers(2)).verdict
    assert (verdict.valid, verdict.step, verdict.reason) == (False, 0, "work units")
    later = dataclasses.replace(claim, round=claim.round + 1)
    verdict = replay_claim(SPEC, later, parents[2], honest.traces[2], signers=None).verdict
    assert (verdict.valid, verdict.reason) == (False, "trace is for another model/stage or an earlier round")
    other_stage = dataclasses.replace(claim, stage=1)
    assert replay_claim(SPEC, other_stage, parents[2], honest.traces[2], signers=None).verdict.valid is False


def test_a_trace_of_a_later_swarm_round_is_judged_at_its_lineage_round(rounds):
    """After a rollback a worker's lineage round (what it claims) trails the swarm round it trained in."""
    parents, honest = rounds
    claim = claim_for(honest.states[0], honest.traces[0], WORKERS[0])
    earlier = dataclasses.replace(claim, round=claim.round - 1)
    verdict = replay_claim(SPEC, earlier, parents[0], honest.traces[0], signers=_signers(0)).verdict
    assert (verdict.valid, verdict.round) == (True, claim.round - 1)


def test_messages_from_outside_the_neighbour_stages_are_refused(rounds):
    parents, honest = rounds
    claim = claim_for(honest.states[1], honest.traces[1], WORKERS[1])
    wrong = {"forward": {MALLORY.address}, "backward": {STAGES[2].address}}
    verdict = replay_claim(SPEC, claim, parents[1], honest.traces[1], signers=wrong).verdict
    assert (verdict.valid, verdict.step) == (False, 0)
    assert "not an allowed sender" in verdict.reason


def test_a_copy_of_another_workers_claim_is_refuted_at_its_first_message(rounds):
    """Audit F6: another member of stage 1 claims the honest worker's round (same trace, checkpoint
    and record); every message in the trace is addressed to the honest worker, so the copy is
    refuted at step 0, while the same round claimed by its worker is valid."""
    parents, honest = rounds
    copy = claim_for(honest.states[1], honest.traces[1], SECOND)
    verdict = replay_claim(SPEC, copy, parents[1], honest.traces[1], signers=_signers(1)).verdict
    assert (verdict.valid, verdict.round, verdict.step) == (False, copy.round, 0)
    assert verdict.reason == (
        f"forward message of micro-batch 0 is addressed to {WORKERS[1].lower()}, "
        f"not the claiming worker {SECOND.lower()}"
    )
    assert (verdict.expected, verdict.actual) == (SECOND.lower(), WORKERS[1].lower())
    own = claim_for(honest.states[1], honest.traces[1], WORKERS[1])
    assert replay_claim(SPEC, own, parents[1], honest.traces[1], signers=_signers(1)).verdict.valid


def test_replica_digest_is_checked_against_the_group_average():
    sign = make_signer(DRIVER, STAGES)
    parents, replicas, average = replica_round(SPEC, sign, [WORKERS[0], WORKERS[1], SECOND, WORKERS[2]])
    claims = [
        claim_for(average, r.trace, worker, claim_id=i + 1)
        for i, (r, worker) in enumerate(zip(replicas, [WORKERS[1], SECOND], strict=True))
    ]
    states = []
    for claim, replica in zip(claims, replicas, strict=True):
        replayed = replay_claim(SPEC, claim, parents[1], replica.trace, signers=_signers(1))
        assert replayed.verdict is None  # its trace replays, its digest is the group's, not its own
        assert replayed.state == replica.state_bytes()
        states.append(replayed.state)
    assert judge_group(SPEC, claims[0], states, complete=True).valid is True
    assert judge_group(SPEC, claims[1], states[::-1], complete=True).valid is True
    waiting = judge_group(SPEC, claims[0], states[:1], complete=False)
    assert waiting.valid is None and "have not claimed" in waiting.reason
    forged = dataclasses.replace(claims[0], checkpoint_digest="ab" * 32)
    refuted = judge_group(SPEC, forged, states, complete=True)
    assert (refuted.valid, refuted.step) == (False, SPEC.round_steps - 1)
