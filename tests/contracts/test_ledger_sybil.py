"""Fresh addresses cannot slash an honest claim: not in one block, not before the vote window ends,
not against the stage's established validators, and (with validatorDelay longer than the
challenge and vote windows, as the testnet defaults have it) not at all."""

import pytest
from brownie import accounts as brownie_accounts
from brownie import chain
from conftest import ETHER, TEST_LEDGER, register_validators, submit
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32


@pytest.fixture
def sybils(ledger, accounts):
    """Four fresh addresses, funded and staked with the minimum validator stake."""
    fresh = [brownie_accounts.add() for _ in range(4)]
    for account in fresh:
        accounts[0].transfer(account, 3 * ETHER)
        ledger.stake({"from": account, "value": TEST_LEDGER.min_validator_stake})
    return fresh


@pytest.fixture
def honest_claim(ledger, model, staked, workers, validators):
    """An honest worker's claim on a stage with two established validators."""
    register_validators(ledger, model, 0, validators[:2])
    ledger.join(model, 0, b"w", KEY, {"from": workers[0]})
    return submit(ledger, workers[0], model, 0, 1)


def test_fresh_validators_can_neither_challenge_nor_vote_at_once(
    ledger, model, honest_claim, sybils, validators
):
    for sybil in sybils:
        tx = ledger.registerValidator(model, 0, {"from": sybil})
        eligible_at = tx.timestamp + TEST_LEDGER.validator_delay
        with reverts_with("ValidatorTooNew", sybil.address, eligible_at):
            ledger.challenge(honest_claim, 1, 0, EVIDENCE, {"from": sybil})
    # An established validator turned attacker opens the dispute; the fresh ones cannot vote yet,
    # and nobody can resolve before the window while established validators have not voted.
    ledger.challenge(honest_claim, 1, 0, EVIDENCE, {"from": validators[0]})
    eligible_at = ledger.validatorOf(model, sybils[0])["eligibleAt"]
    with reverts_with("ValidatorTooNew", sybils[0].address, eligible_at):
        ledger.vote(honest_claim, False, {"from": sybils[0]})
    deadline = ledger.getClaim(honest_claim)["voteDeadline"]
    with reverts_with("VoteWindowOpen", honest_claim, deadline):
        ledger.resolve(honest_claim, {"from": validators[0]})


def test_sybil_votes_cannot_end_a_dispute_early_nor_outweigh_the_stage_stake(
    ledger, model, honest_claim, sybils, validators
):
    for sybil in sybils:
        ledger.registerValidator(model, 0, {"from": sybil})
    chain.sleep(TEST_LEDGER.validator_delay)
    ledger.challenge(honest_claim, 1, 0, EVIDENCE, {"from": sybils[0]})
    for sybil in sybils[1:]:
        ledger.vote(honest_claim, False, {"from": sybil})  # three votes: past the quorum of 2
    deadline = ledger.getClaim(honest_claim)["voteDeadline"]
    with reverts_with("VoteWindowOpen", honest_claim, deadline):
        ledger.resolve(honest_claim, {"from": sybils[0]})  # the established validators have not voted
    for validator in validators[:2]:
        ledger.vote(honest_claim, True, {"from": validator})  # 2 x 5 ETH against 3 x 2 ETH
    tx = ledger.resolve(honest_claim, {"from": sybils[0]})  # every eligible validator voted
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.UPHELD
    assert tx.events["Slashed"]["account"] == sybils[0]
    for sybil in sybils[1:]:
        assert ledger.settleVote(honest_claim, {"from": sybil}).events["VoteSettled"]["slashed"] > 0


def test_with_a_delay_longer_than_both_windows_late_registrants_never_act(
    ledger, model, honest_claim, sybils, validators
):
    ledger.setParameter(
        b"validatorDelay".ljust(32, b"\0"),
        TEST_LEDGER.challenge_window + TEST_LEDGER.vote_window + 1,
        {"from": ledger.owner()},
    )
    for sybil in sybils:
        ledger.registerValidator(model, 0, {"from": sybil})
    ledger.challenge(honest_claim, 1, 0, EVIDENCE, {"from": validators[0]})
    chain.sleep(TEST_LEDGER.vote_window // 2)  # past the sybils' would-be eligibility, inside the window
    for sybil in sybils:
        eligible_at = ledger.validatorOf(model, sybil)["eligibleAt"]
        with reverts_with("ValidatorTooNew", sybil.address, eligible_at):
            ledger.vote(honest_claim, False, {"from": sybil})
    ledger.vote(honest_claim, True, {"from": validators[1]})
    chain.sleep(2)
    tx = ledger.resolve(honest_claim, {"from": validators[0]})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING  # one voter < quorum: it stands
    chain.sleep(TEST_LEDGER.challenge_window)
    ledger.finalize(honest_claim, {"from": validators[0]})
