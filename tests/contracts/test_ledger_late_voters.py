"""A dispute is voted on only by the validators its stage had when it was opened: an address that
registers (or becomes eligible) after the challenge cannot vote on it, whatever validatorDelay is,
and the early resolution of the dispute does not wait for it."""

import pytest
from brownie import chain
from conftest import ETHER, TEST_LEDGER, next_block_at, register_validators, submit
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32


@pytest.fixture
def dispute(ledger, model, staked, workers, validators):
    """An honest claim challenged by one of the stage's two established validators."""
    register_validators(ledger, model, 0, validators[:2])
    ledger.join(model, 0, b"w", KEY, {"from": workers[0]})
    claim_id = submit(ledger, workers[0], model, 0, 1)
    ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": validators[0]})
    return claim_id


def test_a_validator_registered_after_the_challenge_cannot_vote_on_it(ledger, model, dispute, validators):
    late = validators[2]
    tx = ledger.registerValidator(model, 0, {"from": late})
    eligible_at = tx.timestamp + TEST_LEDGER.validator_delay
    chain.sleep(TEST_LEDGER.validator_delay + 1)  # eligible now, inside the vote window
    assert chain.time() < ledger.getClaim(dispute)["voteDeadline"]
    with reverts_with("ValidatorTooNew", late.address, eligible_at):
        ledger.vote(dispute, False, {"from": late})


def test_a_validator_eligible_only_after_the_challenge_cannot_vote_on_it(
    ledger, model, staked, workers, validators
):
    """Registered before the challenge but still inside its validatorDelay when it was opened."""
    register_validators(ledger, model, 0, validators[:1])
    ledger.join(model, 0, b"w", KEY, {"from": workers[0]})
    claim_id = submit(ledger, workers[0], model, 0, 1)
    tx = ledger.registerValidator(model, 0, {"from": validators[1]})
    ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": validators[0]})
    chain.sleep(TEST_LEDGER.validator_delay + 1)
    with reverts_with("ValidatorTooNew", validators[1].address, tx.timestamp + TEST_LEDGER.validator_delay):
        ledger.vote(claim_id, False, {"from": validators[1]})


def test_late_validators_do_not_hold_up_early_resolution(ledger, model, dispute, validators):
    ledger.registerValidator(model, 0, {"from": validators[2]})
    chain.sleep(TEST_LEDGER.validator_delay + 1)
    ledger.vote(dispute, True, {"from": validators[1]})  # the only validator the dispute waits for
    tx = ledger.resolve(dispute, {"from": validators[1]})
    assert tx.timestamp <= ledger.getClaim(dispute)["voteDeadline"]
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING  # one voter, quorum 2


def test_validators_of_the_stage_at_the_challenge_still_vote(ledger, model, dispute, validators):
    ledger.stake({"from": validators[1], "value": ETHER})  # stake added later still weighs
    tx = ledger.vote(dispute, False, {"from": validators[1]})
    assert tx.events["VoteCast"]["weight"] == 6 * ETHER


@pytest.mark.parametrize("opened_after_eligible", [0, -1])
def test_the_edge_a_dispute_opened_exactly_when_the_voter_became_eligible(
    ledger, model, staked, workers, validators, opened_after_eligible
):
    register_validators(ledger, model, 0, validators[:1])
    ledger.join(model, 0, b"w", KEY, {"from": workers[0]})
    claim_id = submit(ledger, workers[0], model, 0, 1)
    eligible_at = (
        ledger.registerValidator(model, 0, {"from": validators[1]}).timestamp + TEST_LEDGER.validator_delay
    )
    next_block_at(eligible_at + opened_after_eligible)
    ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": validators[0]})
    if opened_after_eligible == 0:
        ledger.vote(claim_id, False, {"from": validators[1]})
    else:
        with reverts_with("ValidatorTooNew", validators[1].address, eligible_at):
            ledger.vote(claim_id, False, {"from": validators[1]})
