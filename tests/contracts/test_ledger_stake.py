"""WorkLedger staking: stake, unbond, withdraw; stake backing members, validators and bonds stays."""

from brownie import chain
from conftest import ETHER, TEST_LEDGER, claim_input
from custom_errors import reverts_with


def stake_of(ledger, account):
    staked, locked, memberships, validatorships, unbonding, ready_at = ledger.stakeOf(account)
    return {
        "staked": staked,
        "locked": locked,
        "unbonding": unbonding,
        "readyAt": ready_at,
        "memberships": memberships,
        "validatorships": validatorships,
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


def test_members_and_validators_keep_their_minimum_stake(ledger, model, accounts):
    worker, validator = accounts[5], accounts[6]
    ledger.stake({"from": worker, "value": 3 * ETHER})
    ledger.join(model, 0, b"peer", b"\x01" * 32, {"from": worker})
    with reverts_with("StakeStillRequired", worker.address, 2 * ETHER, ETHER):
        ledger.requestUnstake(2 * ETHER, {"from": worker})
    ledger.requestUnstake(ETHER, {"from": worker})

    ledger.stake({"from": validator, "value": 2 * ETHER})
    ledger.registerValidator(model, 1, {"from": validator})
    with reverts_with("StakeStillRequired", validator.address, 2 * ETHER, 2 * ETHER - 1):
        ledger.requestUnstake(1, {"from": validator})

    ledger.leave(model, {"from": worker})
    ledger.requestUnstake(2 * ETHER, {"from": worker})  # no longer a member: all of it may go
    ledger.leaveValidator(model, {"from": validator})
    ledger.requestUnstake(2 * ETHER, {"from": validator})


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
