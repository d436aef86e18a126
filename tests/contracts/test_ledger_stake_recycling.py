"""The same stake cannot weigh twice in one dispute: stake that was counted in a vote and then
unstaked cannot be withdrawn (and staked again by another validator) before the vote window
ends, even when the owner sets an unbondingPeriod shorter than the vote window."""

import pytest
from brownie import chain
from conftest import ETHER, TEST_LEDGER, register_validators, stakes, submit
from custom_errors import reverts_with

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32
SHORT_UNBONDING = 10


@pytest.fixture
def dispute(ledger, model, staked, workers, validators, accounts):
    """An honest claim challenged by validators[0], with an unbondingPeriod shorter than the vote
    window: without the rule, validators[1] could vote, unstake, withdraw and fund another
    established validator that votes again with the same ether."""
    ledger.setParameter(b"unbondingPeriod".ljust(32, b"\0"), SHORT_UNBONDING, {"from": accounts[0]})
    register_validators(ledger, model, 0, validators)
    ledger.join(model, 0, b"w", KEY, {"from": workers[0]})
    claim_id = submit(ledger, workers[0], model, 0, 1)
    ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": validators[0]})
    return claim_id


def test_stake_counted_in_a_vote_stays_until_the_vote_window_ends(ledger, dispute, validators):
    voter = validators[1]
    ledger.vote(dispute, False, {"from": voter})
    staked, locked = stakes(ledger, voter)
    tx = ledger.requestUnstake(staked - locked, {"from": voter})
    vote_deadline = ledger.getClaim(dispute)["voteDeadline"]
    ready_at = tx.events["UnstakeRequested"]["readyAt"]
    assert ready_at == tx.timestamp + TEST_LEDGER.vote_window + 1 > vote_deadline
    chain.sleep(SHORT_UNBONDING + 1)
    with reverts_with("UnbondingNotOver", voter.address, ready_at):
        ledger.withdraw({"from": voter})
    chain.sleep(ready_at - chain.time())
    ledger.withdraw({"from": voter})


def test_an_unbonding_period_longer_than_the_vote_window_applies_as_set(
    ledger, dispute, validators, accounts
):
    ledger.setParameter(
        b"unbondingPeriod".ljust(32, b"\0"), 3 * TEST_LEDGER.vote_window, {"from": accounts[0]}
    )
    tx = ledger.requestUnstake(ETHER, {"from": validators[2]})
    assert tx.events["UnstakeRequested"]["readyAt"] == tx.timestamp + 3 * TEST_LEDGER.vote_window
