"""WorkLedger cascades: a rejected claim voids every later open claim of its lane in O(1) (bonds
released, one slash), waits for the earlier ones to settle, and the lane goes on from the last
claim before it."""

import pytest
from brownie import ModelShares, chain
from conftest import ETHER, TEST_LEDGER, ZERO32, stakes, submit, submit_chain
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32
BOND = TEST_LEDGER.claim_bond
RATE = 3 * ETHER


@pytest.fixture
def cheater(ledger, model, staked, workers, stage_validators):
    ledger.join(model, 0, b"a", KEY, {"from": workers[0]})
    return workers[0]


def refute(ledger, claim_id, validators, round_=None):
    """Challenge `claim_id` and vote it down with the two other validators (the whole stage)."""
    round_ = round_ or ledger.getClaim(claim_id)["firstRound"]
    ledger.challenge(claim_id, round_, 0, EVIDENCE, {"from": validators[0]})
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})


def test_a_refuted_round_is_slashed_once_and_voids_the_rounds_after_it(
    ledger, protocol, model, cheater, validators
):
    """The cheater claims rounds 1..5 one claim each; round 3 is refuted: rounds 1-2 finalize,
    round 3 is slashed once, rounds 4-5 are voided with their bonds released, and the lane goes on
    from round 2's checkpoint."""
    ids = submit_chain(ledger, cheater, model, 0, 5)
    refute(ledger, ids[2], validators)
    head = ids[0]
    with reverts_with("EarlierClaimOpen", ids[2], head):
        ledger.resolve(ids[2], {"from": validators[0]})
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(ids[1], {"from": cheater})
    assert stakes(ledger, cheater) == (5 * ETHER, 3 * BOND)

    tx = ledger.resolve(ids[2], {"from": validators[0]})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.REJECTED
    assert tx.events["LaneVoided"] == {
        "modelId": model,
        "worker": cheater,
        "rejectedClaimId": ids[2],
        "voidedClaims": 2,
        "bondsReleased": 2 * BOND,
    }
    assert len(tx.events["Slashed"]) == 1
    assert stakes(ledger, cheater) == (5 * ETHER - BOND, 0)
    statuses = [ledger.getClaim(i)["status"] for i in ids]
    assert statuses == [ClaimStatus.FINALIZED] * 2 + [ClaimStatus.REJECTED] + [ClaimStatus.VOIDED] * 2
    for voided in ids[3:]:
        with reverts_with("WrongClaimStatus", voided, ClaimStatus.VOIDED):
            ledger.finalize(voided, {"from": cheater})
        with reverts_with("WrongClaimStatus", voided, ClaimStatus.VOIDED):
            ledger.challenge(
                voided, ledger.getClaim(voided)["firstRound"], 0, EVIDENCE, {"from": validators[1]}
            )
    assert ModelShares.at(protocol.registry.getModel(model)["shares"]).totalSupply() == 20 * RATE

    lane = ledger.laneOf(model, cheater)
    round2_cid = ledger.getClaim(ids[1])["checkpointCID"]
    assert (lane["openCount"], lane["tipRound"], lane["tipCheckpointCID"]) == (0, 2, round2_cid)
    assert ledger.openClaimsOf(model, cheater) == []
    again = submit(ledger, cheater, model, 0, 3, parent=round2_cid)
    assert again == ids[-1] + 1
    assert ledger.getClaim(again)["previousClaimId"] == 0


def test_a_challenge_of_one_round_rejects_the_whole_multi_round_claim(ledger, model, cheater, validators):
    [claim_id] = submit_chain(ledger, cheater, model, 0, 1, rounds=5)
    refute(ledger, claim_id, validators, round_=4)
    tx = ledger.resolve(claim_id, {"from": validators[0]})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.REJECTED
    assert ledger.laneOf(model, cheater)["tipRound"] == 0  # none of rounds 1..5 stands


def test_a_challenger_of_a_voided_claim_gets_its_bond_back(ledger, model, cheater, validators, accounts):
    ids = submit_chain(ledger, cheater, model, 0, 3)
    extra = accounts[1]  # a fourth validator challenges the last claim
    ledger.stake({"from": extra, "value": 5 * ETHER})
    ledger.registerValidator(model, 0, {"from": extra})
    chain.sleep(TEST_LEDGER.validator_delay)
    ledger.challenge(ids[2], 3, 0, EVIDENCE, {"from": extra})
    ledger.vote(ids[2], False, {"from": validators[2]})
    refute(ledger, ids[0], validators)
    ledger.vote(ids[0], False, {"from": extra})
    ledger.resolve(ids[0], {"from": validators[0]})  # every eligible validator voted: at once
    assert ledger.getClaim(ids[2])["status"] == ClaimStatus.VOIDED
    assert stakes(ledger, extra) == (5 * ETHER, BOND + TEST_LEDGER.vote_bond)

    tx = ledger.resolve(ids[2], {"from": extra})
    assert tx.events["ClaimResolved"] == {"claimId": ids[2], "outcome": ClaimStatus.VOIDED, "slashed": False}
    assert stakes(ledger, extra) == (5 * ETHER, TEST_LEDGER.vote_bond)
    with reverts_with("WrongClaimStatus", ids[2], ClaimStatus.VOIDED):
        ledger.resolve(ids[2], {"from": extra})
    tx = ledger.settleVote(ids[2], {"from": validators[2]})  # a vote on a voided claim loses nothing
    assert tx.events["VoteSettled"]["slashed"] == 0
    ledger.settleVote(ids[0], {"from": extra})
    assert stakes(ledger, extra) == (5 * ETHER, 0)
    with reverts_with("WrongClaimStatus", ids[1], ClaimStatus.VOIDED):
        ledger.resolve(ids[1], {"from": extra})  # never challenged: nothing to resolve


def test_a_voided_dispute_resolves_after_its_ring_slot_was_reused(
    ledger, model, cheater, validators, accounts
):
    """Disputes are kept by claim id, outside the ring: the challenger of a voided claim can still
    take its bond back after the lane has moved on by more than MAX_PENDING_CLAIMS claims."""
    ring = ledger.MAX_PENDING_CLAIMS()
    ids = submit_chain(ledger, cheater, model, 0, 2)
    extra = accounts[1]
    ledger.stake({"from": extra, "value": 5 * ETHER})
    ledger.registerValidator(model, 0, {"from": extra})
    chain.sleep(TEST_LEDGER.validator_delay)
    ledger.challenge(ids[1], 2, 0, EVIDENCE, {"from": extra})
    refute(ledger, ids[0], validators)
    ledger.vote(ids[0], False, {"from": extra})
    ledger.resolve(ids[0], {"from": validators[0]})
    ledger.setParameter(b"claimBond".ljust(32, b"\0"), 1, {"from": ledger.owner()})  # 64 bonds fit
    submit_chain(ledger, cheater, model, 0, ring, parent=ZERO32)
    with reverts_with("UnknownClaim", ids[1]):
        ledger.getClaim(ids[1])
    ledger.resolve(ids[1], {"from": extra})
    assert stakes(ledger, extra) == (5 * ETHER, TEST_LEDGER.vote_bond)


def test_rejecting_with_60_later_open_claims_costs_what_rejecting_alone_costs(
    ledger, model, staked, workers, stage_validators, validators
):
    ledger.setParameter(b"claimBond".ljust(32, b"\0"), ETHER // 100, {"from": ledger.owner()})  # 61 bonds fit
    gas = []
    # The first rejection also creates the treasury's stake slot: it warms up, the others compare.
    for worker, later in ((workers[2], 0), (workers[0], 0), (workers[1], 60)):
        ledger.join(model, 0, b"w", KEY, {"from": worker})
        ids = submit_chain(ledger, worker, model, 0, 1 + later)
        refute(ledger, ids[0], validators)
        tx = ledger.resolve(ids[0], {"from": validators[0]})
        assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.REJECTED
        gas.append(tx.gas_used)
        assert stakes(ledger, worker)[1] == 0
    assert abs(gas[2] - gas[1]) <= 5_000, gas
