"""Every WorkLedger deadline at its exact edge: the last second it allows, the first it refuses."""

import pytest
from brownie import chain
from conftest import TEST_LEDGER, next_block_at, register_validators, submit
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32


@pytest.fixture
def lanes(ledger, model, staked, workers, validators):
    """Two workers of stage 0, each with one claim; all three validators validate stage 0."""
    register_validators(ledger, model, 0, validators)
    ids = []
    for worker in workers[:2]:
        ledger.join(model, 0, b"w", KEY, {"from": worker})
        ids.append(submit(ledger, worker, model, 0, 1))
    return ids


def test_a_claim_can_be_challenged_until_its_deadline_inclusive(ledger, lanes, validators):
    a, b = lanes
    next_block_at(ledger.getClaim(a)["deadline"])
    ledger.challenge(a, 1, 0, EVIDENCE, {"from": validators[0]})
    deadline = ledger.getClaim(b)["deadline"]
    next_block_at(deadline + 1)
    with reverts_with("ChallengeWindowClosed", b, deadline):
        ledger.challenge(b, 1, 0, EVIDENCE, {"from": validators[0]})


def test_a_claim_finalizes_from_the_second_after_its_deadline(ledger, lanes, workers):
    a = lanes[0]
    deadline = ledger.getClaim(a)["deadline"]
    next_block_at(deadline)
    with reverts_with("ChallengeWindowOpen", a, deadline):
        ledger.finalize(a, {"from": workers[0]})
    next_block_at(deadline + 1)
    ledger.finalize(a, {"from": workers[0]})


def test_an_unavailable_challenge_opens_when_the_grace_ends(ledger, lanes, validators):
    a = lanes[0]
    grace_ends = ledger.getClaim(a)["submittedAt"] + TEST_LEDGER.availability_grace
    next_block_at(grace_ends - 1)
    with reverts_with("AvailabilityGraceNotOver", a, grace_ends):
        ledger.challengeUnavailable(a, {"from": validators[0]})
    next_block_at(grace_ends)
    ledger.challengeUnavailable(a, {"from": validators[0]})


def test_votes_count_until_the_vote_deadline_and_resolve_waits_for_the_second_after(
    ledger, lanes, validators
):
    """validators[2] never votes, so resolve cannot end either dispute before its vote deadline."""
    a, b = lanes
    ledger.challenge(a, 1, 0, EVIDENCE, {"from": validators[0]})
    chain.sleep(5)
    ledger.challenge(b, 1, 0, EVIDENCE, {"from": validators[0]})
    deadline_a, deadline_b = ledger.getClaim(a)["voteDeadline"], ledger.getClaim(b)["voteDeadline"]
    next_block_at(deadline_a)
    ledger.vote(a, True, {"from": validators[1]})
    next_block_at(deadline_a + 1)
    assert (
        ledger.resolve(a, {"from": validators[1]}).events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING
    )
    next_block_at(deadline_b)
    with reverts_with("VoteWindowOpen", b, deadline_b):
        ledger.resolve(b, {"from": validators[1]})
    next_block_at(deadline_b + 1)
    with reverts_with("VoteWindowClosed", b, deadline_b):
        ledger.vote(b, True, {"from": validators[1]})


def test_a_validator_acts_from_its_eligibility_time(ledger, model, lanes, accounts):
    fresh = accounts[1]
    ledger.stake({"from": fresh, "value": TEST_LEDGER.min_validator_stake})
    ledger.registerValidator(model, 0, {"from": fresh})
    eligible_at = ledger.validatorOf(model, fresh)["eligibleAt"]
    next_block_at(eligible_at - 1)
    with reverts_with("ValidatorTooNew", fresh.address, eligible_at):
        ledger.challenge(lanes[0], 1, 0, EVIDENCE, {"from": fresh})
    next_block_at(eligible_at)
    ledger.challenge(lanes[0], 1, 0, EVIDENCE, {"from": fresh})


def test_unbonded_stake_is_withdrawable_from_ready_at(ledger, accounts):
    alice = accounts[1]
    ledger.stake({"from": alice, "value": 10**18})
    ready_at = ledger.requestUnstake(10**18, {"from": alice}).events["UnstakeRequested"]["readyAt"]
    next_block_at(ready_at - 1)
    with reverts_with("UnbondingNotOver", alice.address, ready_at):
        ledger.withdraw({"from": alice})
    next_block_at(ready_at)
    ledger.withdraw({"from": alice})
