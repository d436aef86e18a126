"""WorkLedger staking: stake, unbond, withdraw; stake backing members and bonds stays; a validator's
minimum is checked when it acts instead."""

from brownie import chain
from conftest import ETHER, TEST_LEDGER, claim_input, submit
from custom_errors import reverts_with


def stake_of(ledger, account):
    staked, locked, memberships, unbonding, ready_at = ledger.stakeOf(account)
    return {
        "staked": staked,
        "locked": locked,
        "unbonding": unbonding,
        "readyAt": ready_at,
        "memberships": memberships,
    }


def test_stake_unbond_and_withdraw(ledger, accounts):
    alice = accounts[5]
    tx = ledger.stake({"from": alice, "value": 3 * ETHER})
    assert tx.events["Staked"] == {"account": alice, "amount": 3 * ETHER, "total": 3 * ETHER}
    with reverts_with("ZeroAmount"):
        ledger.stake({"from": alice, "value": 0})
    with reverts_with("InsufficientStake", alice.address, 4 * ETHER, 3 * ETHER):
        ledger.requestUnstake(4 * ETHER, {"from": alice})
    with reverts_with("NothingToWithdraw", alice.address):
        ledger.withdraw({"from": alice})

    tx = ledger.requestUnstake(ETHER, {"from": alice})
    ready_at = tx.events["UnstakeRequested"]["readyAt"]
    assert ready_at == tx.timestamp + TEST_LEDGER.unbonding_period
    assert stake_of(ledger, alice)["staked"] == 2 * ETHER
    assert stake_of(ledger, alice)["unbonding"] == ETHER
    with reverts_with("UnbondingNotOver", alice.address, ready_at):
        ledger.withdraw({"from": alice})

    chain.sleep(TEST_LEDGER.unbonding_period + 1)
    before = alice.balance()
    tx = ledger.withdraw({"from": alice})
    assert tx.events["Withdrawn"] == {"account": alice, "amount": ETHER}
    assert alice.balance() - before == ETHER
    assert stake_of(ledger, alice)["unbonding"] == 0
    assert ledger.balance() == 2 * ETHER


def test_members_keep_their_minimum_stake(ledger, model, accounts):
    worker = accounts[5]
    ledger.stake({"from": worker, "value": 3 * ETHER})
    ledger.join(model, 0, b"peer", b"\x01" * 32, {"from": worker})
    with reverts_with("StakeStillRequired", worker.address, 2 * ETHER, ETHER):
        ledger.requestUnstake(2 * ETHER, {"from": worker})
    ledger.requestUnstake(ETHER, {"from": worker})
    assert stake_of(ledger, worker)["memberships"] == 1

    ledger.leave(model, {"from": worker})
    assert stake_of(ledger, worker)["memberships"] == 0
    ledger.requestUnstake(2 * ETHER, {"from": worker})  # no longer a member: all of it may go


def test_a_validator_below_its_minimum_stake_can_neither_challenge_nor_vote(
    ledger, model, staked, workers, validators
):
    """Registering locks nothing: a validator may unstake, but then it cannot act until it tops up."""
    worker, challenger, voter = workers[0], validators[0], validators[1]
    ledger.join(model, 0, b"peer", b"\x01" * 32, {"from": worker})
    for v in (challenger, voter):
        ledger.registerValidator(model, 0, {"from": v})
    chain.sleep(TEST_LEDGER.validator_delay)
    claim_id = submit(ledger, worker, model, 0, 1)

    ledger.requestUnstake(4 * ETHER, {"from": challenger})  # 5 staked, 1 left: minValidatorStake is 2
    with reverts_with("InsufficientStake", challenger.address, 2 * ETHER, ETHER):
        ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": challenger})
    ledger.stake({"from": challenger, "value": ETHER})
    ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": challenger})

    ledger.requestUnstake(4 * ETHER, {"from": voter})
    with reverts_with("InsufficientStake", voter.address, 2 * ETHER, ETHER):
        ledger.vote(claim_id, True, {"from": voter})
    assert stake_of(ledger, voter)["locked"] == 0


def test_a_worker_cannot_withdraw_the_bond_of_an_open_claim(ledger, model, staked, workers):
    worker = workers[0]
    ledger.join(model, 0, b"peer", b"\x01" * 32, {"from": worker})
    ledger.submitClaim(claim_input(model, 0, 1), {"from": worker})
    assert stake_of(ledger, worker)["locked"] == ETHER
    # 5 staked, 1 locked by the bond, 2 kept for membership: 2 can leave, 3 cannot.
    with reverts_with("InsufficientStake", worker.address, 5 * ETHER, 4 * ETHER):
        ledger.requestUnstake(5 * ETHER, {"from": worker})
    with reverts_with("StakeStillRequired", worker.address, 2 * ETHER, ETHER):
        ledger.requestUnstake(4 * ETHER, {"from": worker})
    ledger.requestUnstake(2 * ETHER, {"from": worker})
