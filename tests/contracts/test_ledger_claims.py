"""WorkLedger claims: submitting on the lane's tip or the stage's finalized checkpoint, round
ranges, the pending limit, and the lane views (getClaim, laneOf, openClaimsOf)."""

import pytest
from brownie import chain
from conftest import ETHER, TEST_LEDGER, ZERO32, claim_input, stakes, submit, submit_chain
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32


@pytest.fixture
def members(ledger, model, staked, workers):
    """workers[0] and workers[1] on stage 0, workers[2] on stage 1."""
    ledger.join(model, 0, b"a", KEY, {"from": workers[0]})
    ledger.join(model, 0, b"b", KEY, {"from": workers[1]})
    ledger.join(model, 1, b"c", KEY, {"from": workers[2]})


def test_a_claim_records_its_rounds_and_locks_its_bond(ledger, model, members, workers):
    worker = workers[0]
    inp = claim_input(model, 0, 1, 12, work_units=24)
    tx = ledger.submitClaim(inp, {"from": worker})
    event = tx.events["ClaimSubmitted"]
    claim_id = event["claimId"]
    lane_id = ledger.laneOf(model, worker)["laneId"]
    assert claim_id == lane_id << 64 | 1
    assert dict(event) == {
        "claimId": claim_id,
        "modelId": model,
        "stage": 0,
        "firstRound": 1,
        "lastRound": 12,
        "worker": worker,
        "previousClaimId": 0,
        "parentCID": ZERO32,
        "checkpointCID": inp[5],
        "checkpointDigest": inp[6],
        "roundsRoot": inp[7],
        "manifestCID": inp[8],
        "workUnits": 24,
    }
    claim = ledger.getClaim(claim_id)
    assert (claim["worker"], claim["modelId"], claim["stage"], claim["status"]) == (
        worker,
        model,
        0,
        ClaimStatus.PENDING,
    )
    assert (claim["firstRound"], claim["lastRound"], claim["workUnits"], claim["bond"]) == (1, 12, 24, ETHER)
    assert claim["submittedAt"] == tx.timestamp
    assert claim["deadline"] == tx.timestamp + TEST_LEDGER.challenge_window
    assert (claim["checkpointCID"], claim["checkpointDigest"], claim["roundsRoot"]) == inp[5:8]
    assert claim["previousClaimId"] == 0
    assert claim["challenger"] == "0x" + "00" * 20
    assert stakes(ledger, worker) == (5 * ETHER, ETHER)


def test_claims_chain_on_the_lane_tip(ledger, model, members, workers):
    worker = workers[0]
    first, second = submit_chain(ledger, worker, model, 0, 2, rounds=3)
    assert second == first + 1
    assert ledger.getClaim(second)["previousClaimId"] == first
    assert (ledger.getClaim(second)["firstRound"], ledger.getClaim(second)["lastRound"]) == (4, 6)
    tip_cid = ledger.getClaim(second)["checkpointCID"]

    lane = ledger.laneOf(model, worker)
    assert (lane["openCount"], lane["headClaimId"], lane["tipClaimId"]) == (2, first, second)
    assert (lane["tipRound"], lane["tipCheckpointCID"]) == (6, tip_cid)
    assert ledger.openClaimsOf(model, worker) == [first, second]

    # The next claim must start from the tip: its checkpoint and the round after it.
    with reverts_with("ParentMismatch", tip_cid, ZERO32):
        submit(ledger, worker, model, 0, 7)
    with reverts_with("RoundsNotContiguous", 8, 7):
        submit(ledger, worker, model, 0, 8, parent=tip_cid)
    with reverts_with("RoundsNotContiguous", 6, 7):
        submit(ledger, worker, model, 0, 6, parent=tip_cid)
    third = submit(ledger, worker, model, 0, 7, parent=tip_cid)
    assert ledger.getClaim(third)["previousClaimId"] == second
    assert stakes(ledger, worker) == (5 * ETHER, 3 * ETHER)


def test_an_empty_lane_chains_on_the_stage_finalized_checkpoint(ledger, protocol, model, members, workers):
    a, b = workers[0], workers[1]
    [claim_a] = submit_chain(ledger, a, model, 0, 1, rounds=2)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(claim_a, {"from": a})
    finalized_cid, _, finalized_round = protocol.registry.checkpointOf(model, 0)
    assert finalized_round == 2

    # b's lane is empty: its parent is the stage's finalized checkpoint, whoever finalized it.
    lane = ledger.laneOf(model, b)
    assert (lane["openCount"], lane["headClaimId"], lane["tipClaimId"]) == (0, 0, 0)
    assert (lane["tipRound"], lane["tipCheckpointCID"]) == (2, finalized_cid)
    with reverts_with("ParentMismatch", finalized_cid, ZERO32):
        submit(ledger, b, model, 0, 3)
    with reverts_with("RoundsNotContiguous", 1, 3):
        submit(ledger, b, model, 0, 1, parent=finalized_cid)
    claim_b = submit(ledger, b, model, 0, 3, parent=finalized_cid)
    assert ledger.getClaim(claim_b)["previousClaimId"] == 0


def test_a_lane_holds_at_most_max_pending_claims(ledger, model, members, workers, accounts):
    worker = workers[0]
    ledger.setParameter(b"maxPendingClaims".ljust(32, b"\0"), 3, {"from": accounts[0]})
    ids = submit_chain(ledger, worker, model, 0, 3)
    tip_cid = ledger.getClaim(ids[-1])["checkpointCID"]
    with reverts_with("TooManyPendingClaims", model, worker.address, 3):
        submit(ledger, worker, model, 0, 4, parent=tip_cid)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(ids[0], {"from": worker})
    submit(ledger, worker, model, 0, 4, parent=tip_cid)  # one settled, one more fits


def test_submit_claim_rejects_bad_claims(ledger, protocol, model, members, workers, accounts):
    worker = workers[0]
    with reverts_with("NotStageMember", model, 1, worker.address):
        submit(ledger, worker, model, 1, 1)
    with reverts_with("NotStageMember", model, 0, accounts[1].address):
        submit(ledger, accounts[1], model, 0, 1)
    with reverts_with("InvalidWorkUnits", 0, 1_000):
        submit(ledger, worker, model, 0, 1, work_units=0)
    with reverts_with("InvalidWorkUnits", 1_001, 1_000):
        submit(ledger, worker, model, 0, 1, work_units=1_001)
    with reverts_with("InvalidRoundRange", 2, 1):
        submit(ledger, worker, model, 0, 2, 1)
    # More rounds than work units: every round is at least one unit of work.
    with reverts_with("InvalidRoundRange", 1, 11):
        submit(ledger, worker, model, 0, 1, 11, work_units=10)
    no_cid = list(claim_input(model, 0, 1))
    no_cid[5] = ZERO32
    with reverts_with("EmptyCheckpointCID"):
        ledger.submitClaim(no_cid, {"from": worker})
    wrong_parent = "0x" + "ab" * 32
    with reverts_with("ParentMismatch", ZERO32, wrong_parent):
        submit(ledger, worker, model, 0, 1, parent=wrong_parent)
    with reverts_with("RoundsNotContiguous", 0, 1):
        submit(ledger, worker, model, 0, 0)
    with reverts_with("RoundsNotContiguous", 2**64 - 1, 1):
        submit(ledger, worker, model, 0, 2**64 - 1)
    ledger.setParameter(b"claimBond".ljust(32, b"\0"), 10 * ETHER, {"from": accounts[0]})
    with reverts_with("InsufficientStake", worker.address, 10 * ETHER, 5 * ETHER):
        submit(ledger, worker, model, 0, 1)
    protocol.registry.setStatus(model, 1, {"from": accounts[1]})
    with reverts_with("ModelNotActive", model):
        submit(ledger, worker, model, 0, 1)


def test_unknown_claim_ids(ledger, model, members, workers):
    [claim_id] = submit_chain(ledger, workers[0], model, 0, 1)
    for unknown in (claim_id + 1, claim_id - 1, 12345, 1 << 200 | claim_id):
        with reverts_with("UnknownClaim", unknown):
            ledger.getClaim(unknown)
        with reverts_with("UnknownClaim", unknown):
            ledger.finalize(unknown, {"from": workers[0]})


def test_a_ring_slot_is_reused_after_max_pending_claims(ledger, model, members, workers, accounts):
    """A claim's storage is reused MAX_PENDING_CLAIMS claims later: getClaim answers for the lane's
    latest ones only; the earlier ones live in the events."""
    worker = workers[0]
    ring = ledger.MAX_PENDING_CLAIMS()
    ledger.setParameter(b"maxPendingClaims".ljust(32, b"\0"), 2, {"from": accounts[0]})
    ledger.setParameter(b"claimBond".ljust(32, b"\0"), 1, {"from": accounts[0]})
    ids, parent = [], ZERO32
    for round_ in range(1, ring + 2):
        ids.append(submit(ledger, worker, model, 0, round_, parent=parent))
        parent = ledger.getClaim(ids[-1])["checkpointCID"]
        if len(ids) >= 2:
            chain.sleep(TEST_LEDGER.challenge_window + 1)
            ledger.finalize(ids[-2], {"from": worker})
    with reverts_with("UnknownClaim", ids[0]):
        ledger.getClaim(ids[0])
    assert ledger.getClaim(ids[1])["status"] == ClaimStatus.FINALIZED
    assert ledger.getClaim(ids[-1])["firstRound"] == ring + 1
