"""WorkLedger finalize: runs of due claims in lane order, one mint and one checkpoint record per
run, replicas, and the share supply cap that must never lock a lane."""

import pytest
from brownie import ModelShares, chain
from conftest import ETHER, TEST_LEDGER, create_model, register_validators, stakes, submit, submit_chain
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
RATE = 3 * ETHER  # the `model` fixture's shares per work unit


@pytest.fixture
def members(ledger, model, staked, workers):
    ledger.join(model, 0, b"a", KEY, {"from": workers[0]})
    ledger.join(model, 0, b"b", KEY, {"from": workers[1]})


def shares_of(protocol, model):
    return ModelShares.at(protocol.registry.getModel(model)["shares"])


def test_an_honest_claim_mints_exactly_its_shares_after_its_deadline(
    ledger, protocol, model, members, workers
):
    worker = workers[0]
    [claim_id] = submit_chain(ledger, worker, model, 0, 1, rounds=4)
    claim = ledger.getClaim(claim_id)
    with reverts_with("ChallengeWindowOpen", claim_id, claim["deadline"]):
        ledger.finalize(claim_id, {"from": workers[1]})
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    tx = ledger.finalize(claim_id, {"from": workers[1]})  # anyone may finalize
    assert tx.events["ClaimFinalized"] == {"claimId": claim_id, "sharesMinted": 10 * RATE}
    assert tx.events["ClaimsFinalized"] == {
        "modelId": model,
        "worker": worker,
        "firstClaimId": claim_id,
        "lastClaimId": claim_id,
        "claims": 1,
        "sharesMinted": 10 * RATE,
    }
    assert tx.events["CheckpointAccepted"] == {
        "modelId": model,
        "stage": 0,
        "round": 4,
        "cid": claim["checkpointCID"],
    }
    assert shares_of(protocol, model).balanceOf(worker) == 10 * RATE
    assert stakes(ledger, worker) == (5 * ETHER, 0)
    assert list(protocol.registry.checkpointOf(model, 0)) == [
        claim["checkpointCID"],
        claim["checkpointDigest"],
        4,
    ]
    assert ledger.getClaim(claim_id)["status"] == ClaimStatus.FINALIZED
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.FINALIZED):
        ledger.finalize(claim_id, {"from": worker})


def test_a_run_finalizes_in_one_transaction_with_one_mint_and_one_checkpoint(
    ledger, protocol, model, members, workers
):
    worker = workers[0]
    ids = submit_chain(ledger, worker, model, 0, 5, rounds=2)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    tx = ledger.finalize(ids[2], {"from": worker})  # claims 1..3 of the lane
    assert [event["claimId"] for event in tx.events["ClaimFinalized"]] == ids[:3]
    assert tx.events["ClaimsFinalized"]["claims"] == 3
    assert tx.events["ClaimsFinalized"]["sharesMinted"] == 30 * RATE
    assert len(tx.events["Transfer"]) == 1  # one mint
    assert len(tx.events["CheckpointAccepted"]) == 1
    assert tx.events["CheckpointAccepted"]["round"] == 6
    assert [ledger.getClaim(i)["status"] for i in ids] == [ClaimStatus.FINALIZED] * 3 + [
        ClaimStatus.PENDING
    ] * 2
    lane = ledger.laneOf(model, worker)
    assert (lane["openCount"], lane["headClaimId"], lane["tipClaimId"]) == (2, ids[3], ids[4])
    assert stakes(ledger, worker) == (5 * ETHER, 2 * ETHER)
    assert shares_of(protocol, model).balanceOf(worker) == 30 * RATE


def test_claims_finalize_in_lane_order_only(ledger, model, members, workers, validators):
    worker = workers[0]
    register_validators(ledger, model, 0, validators[:1])
    first, second = submit_chain(ledger, worker, model, 0, 2)
    # The run stops at the first claim that is not due, with that claim's reason.
    chain.sleep(TEST_LEDGER.challenge_window // 2)
    ledger.challenge(first, 1, 0, "0x" + "ee" * 32, {"from": validators[0]})
    chain.sleep(TEST_LEDGER.challenge_window)
    with reverts_with("WrongClaimStatus", first, ClaimStatus.CHALLENGED):
        ledger.finalize(second, {"from": worker})
    assert ledger.getClaim(second)["status"] == ClaimStatus.PENDING


def test_a_later_claim_waits_for_an_earlier_one_in_its_window(ledger, model, members, workers):
    worker = workers[0]
    first = submit_chain(ledger, worker, model, 0, 1)[0]
    chain.sleep(TEST_LEDGER.challenge_window // 2)
    parent = ledger.getClaim(first)["checkpointCID"]
    second = submit(ledger, worker, model, 0, 2, parent=parent)
    chain.sleep(TEST_LEDGER.challenge_window // 2 + 2)  # the first is due, the second is not
    with reverts_with("ChallengeWindowOpen", second, ledger.getClaim(second)["deadline"]):
        ledger.finalize(second, {"from": worker})
    ledger.finalize(first, {"from": worker})


def test_a_replica_claim_for_an_older_round_mints_but_does_not_move_the_checkpoint(
    ledger, protocol, model, members, workers
):
    [a] = submit_chain(ledger, workers[0], model, 0, 1, rounds=2)
    [b] = submit_chain(ledger, workers[1], model, 0, 1, rounds=2)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(a, {"from": workers[0]})
    tx = ledger.finalize(b, {"from": workers[1]})
    assert "CheckpointAccepted" not in tx.events
    assert protocol.registry.checkpointOf(model, 0)[0] == ledger.getClaim(a)["checkpointCID"]
    assert shares_of(protocol, model).balanceOf(workers[1]) == 10 * RATE


def test_shares_beyond_the_supply_cap_are_not_minted_and_never_lock_the_lane(
    ledger, protocol, staked, workers, accounts
):
    """The rule: a run mints what fits under the share supply cap (2^128 - 1) and forfeits the
    rest; its claims finalize and release their bonds, so the lane and the stake never lock."""
    cap = 2**128 - 1
    rate = 2**96 - 1
    model = create_model(protocol.registry, accounts[1], accounts[2], num_stages=1, rate=rate)
    ledger.setParameter(b"maxWorkUnitsPerClaim".ljust(32, b"\0"), 2**40, {"from": accounts[0]})
    worker = workers[0]
    ledger.join(model, 0, b"a", KEY, {"from": worker})
    units = 2**32  # 2^128 - 2^32 shares each: the second claim crosses the cap, the third is above it
    ids = []
    parent = "0x" + "00" * 32
    for round_ in (1, 2, 3):
        ids.append(submit(ledger, worker, model, 0, round_, parent=parent, work_units=units))
        parent = ledger.getClaim(ids[-1])["checkpointCID"]
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    tx = ledger.finalize(ids[2], {"from": worker})
    minted = [event["sharesMinted"] for event in tx.events["ClaimFinalized"]]
    assert minted == [units * rate, cap - units * rate, 0]
    assert tx.events["ClaimsFinalized"]["sharesMinted"] == cap
    shares = shares_of(protocol, model)
    assert shares.totalSupply() == cap == shares.balanceOf(worker)
    assert stakes(ledger, worker) == (5 * ETHER, 0)
    assert protocol.registry.checkpointOf(model, 0)[2] == 3
    # The lane goes on: a claim above the cap finalizes too, minting nothing.
    parent = ledger.getClaim(ids[2])["checkpointCID"]
    more = submit(ledger, worker, model, 0, 4, parent=parent, work_units=units)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    tx = ledger.finalize(more, {"from": worker})
    assert tx.events["ClaimsFinalized"]["sharesMinted"] == 0
    assert "Transfer" not in tx.events
    assert stakes(ledger, worker) == (5 * ETHER, 0)
