"""WorkLedger claims: every transition and revert of the claim state machine, and the economics."""

import pytest
from brownie import ModelShares, chain
from conftest import ETHER, TEST_LEDGER, claim_input
from custom_errors import reverts_with

KEY = b"\x07" * 32
RATE = 3 * ETHER  # the `model` fixture's shares per work unit
PENDING, CHALLENGED, UPHELD, FINALIZED, REJECTED = 1, 2, 3, 4, 5


@pytest.fixture
def members(ledger, model, staked, workers):
    """workers[0] and workers[1] on stage 0, workers[2] on stage 1."""
    ledger.join(model, 0, b"a", KEY, {"from": workers[0]})
    ledger.join(model, 0, b"b", KEY, {"from": workers[1]})
    ledger.join(model, 1, b"c", KEY, {"from": workers[2]})


def submit(ledger, worker, *args, **kwargs):
    return ledger.submitClaim(claim_input(*args, **kwargs), {"from": worker}).events["ClaimSubmitted"][
        "claimId"
    ]


def stakes(ledger, account):
    staked, locked, *_ = ledger.stakeOf(account)
    return staked, locked


def shares_of(protocol, model):
    return ModelShares.at(protocol.registry.getModel(model)["shares"])


def challenged(ledger, worker, validator, model, round_=1):
    claim_id = submit(ledger, worker, model, 0, round_)
    ledger.challenge(claim_id, 7, "QmEvidence", {"from": validator})
    return claim_id


def test_an_honest_unchallenged_claim_mints_exactly_its_shares(ledger, protocol, model, members, workers):
    worker = workers[0]
    inp = claim_input(model, 0, 1, work_units=10)
    tx = ledger.submitClaim(inp, {"from": worker})
    event = tx.events["ClaimSubmitted"]
    claim_id = event["claimId"]
    assert (event["modelId"], event["stage"], event["round"], event["worker"]) == (model, 0, 1, worker)
    assert (event["parentCID"], event["checkpointCID"], event["traceCID"]) == ("", inp[4], inp[7])
    assert (event["checkpointDigest"], event["traceRoot"], event["workUnits"]) == (inp[5], inp[6], 10)
    claim = ledger.getClaim(claim_id)
    assert (claim["worker"], claim["status"], claim["bond"], claim["workUnits"]) == (
        worker,
        PENDING,
        ETHER,
        10,
    )
    assert claim["deadline"] == tx.timestamp + TEST_LEDGER.challenge_window
    assert claim["checkpointCID"] == inp[4]
    assert stakes(ledger, worker) == (5 * ETHER, ETHER)

    with reverts_with("ChallengeWindowOpen", claim_id, claim["deadline"]):
        ledger.finalize(claim_id, {"from": workers[2]})
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    tx = ledger.finalize(claim_id, {"from": workers[2]})  # anyone may finalize
    assert tx.events["ClaimFinalized"] == {"claimId": claim_id, "sharesMinted": 10 * RATE}
    assert tx.events["CheckpointAccepted"]["cid"] == inp[4]
    assert shares_of(protocol, model).balanceOf(worker) == 10 * RATE
    assert stakes(ledger, worker) == (5 * ETHER, 0)
    assert list(protocol.registry.checkpointOf(model, 0)) == [inp[4], inp[5], 1]
    assert ledger.getClaim(claim_id)["status"] == FINALIZED
    with reverts_with("WrongClaimStatus", claim_id, FINALIZED):
        ledger.finalize(claim_id, {"from": workers[2]})


def test_rounds_chain_on_the_finalized_checkpoint_and_reuse_the_lane(
    ledger, protocol, model, members, workers
):
    worker = workers[0]
    first = submit(ledger, worker, model, 0, 1)
    with reverts_with("PreviousClaimOpen", first):
        submit(ledger, worker, model, 0, 2)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(first, {"from": worker})
    parent = ledger.getClaim(first)["checkpointCID"]

    with reverts_with("ParentMismatch", parent, "QmSomethingElse"):
        submit(ledger, worker, model, 0, 2, parent="QmSomethingElse")
    with reverts_with("RoundNotIncreasing", 1, 1):
        submit(ledger, worker, model, 0, 1, parent=parent)
    # Another member of the stage cannot claim a round at or below the finalized one either.
    with reverts_with("RoundNotIncreasing", 1, 1):
        submit(ledger, workers[1], model, 0, 1, parent=parent)
    second = submit(ledger, worker, model, 0, 2, parent=parent)
    assert second != first
    assert second >> 64 == first >> 64  # same lane, next round
    with reverts_with("UnknownClaim", first):
        ledger.getClaim(first)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(second, {"from": worker})
    assert protocol.registry.checkpointOf(model, 0)[2] == 2


def test_a_replica_claim_for_an_older_round_mints_but_does_not_move_the_checkpoint(
    ledger, protocol, model, members, workers
):
    a = submit(ledger, workers[0], model, 0, 1, cid="QmReplicaA")
    b = submit(ledger, workers[1], model, 0, 1, cid="QmReplicaB")
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(a, {"from": workers[0]})
    tx = ledger.finalize(b, {"from": workers[1]})
    assert "CheckpointAccepted" not in tx.events
    assert protocol.registry.checkpointOf(model, 0)[0] == "QmReplicaA"
    assert shares_of(protocol, model).balanceOf(workers[1]) == 10 * RATE


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
    no_cid = list(claim_input(model, 0, 1))
    no_cid[4] = ""
    with reverts_with("EmptyCheckpointCID"):
        ledger.submitClaim(no_cid, {"from": worker})
    with reverts_with("ParentMismatch", "", "QmNotTheFinalizedCheckpoint"):
        submit(ledger, worker, model, 0, 1, parent="QmNotTheFinalizedCheckpoint")
    with reverts_with("RoundNotIncreasing", 0, 0):
        submit(ledger, worker, model, 0, 0)
    ledger.setParameter(b"claimBond".ljust(32, b"\0"), 10 * ETHER, {"from": accounts[0]})
    with reverts_with("InsufficientStake", worker.address, 10 * ETHER, 5 * ETHER):
        submit(ledger, worker, model, 0, 1)
    protocol.registry.setStatus(model, 1, {"from": accounts[1]})
    with reverts_with("ModelNotActive", model):
        submit(ledger, worker, model, 0, 1)
    with reverts_with("UnknownClaim", 12345):
        ledger.finalize(12345, {"from": worker})


def test_challenge_rules(ledger, model, members, workers, validators, accounts):
    claim_id = submit(ledger, workers[0], model, 0, 1)
    with reverts_with("NotValidator", workers[1].address):
        ledger.challenge(claim_id, 3, "QmEvidence", {"from": workers[1]})
    tx = ledger.challenge(claim_id, 3, "QmEvidence", {"from": validators[0]})
    assert tx.events["ClaimChallenged"] == {
        "claimId": claim_id,
        "challenger": validators[0],
        "stepIndex": 3,
        "evidenceCID": "QmEvidence",
    }
    claim = ledger.getClaim(claim_id)
    assert (claim["status"], claim["challenger"], claim["challengedStep"]) == (CHALLENGED, validators[0], 3)
    assert claim["voteDeadline"] == tx.timestamp + TEST_LEDGER.vote_window
    assert stakes(ledger, validators[0]) == (5 * ETHER, ETHER)
    with reverts_with("WrongClaimStatus", claim_id, CHALLENGED):
        ledger.challenge(claim_id, 3, "QmEvidence", {"from": validators[1]})
    with reverts_with("WrongClaimStatus", claim_id, CHALLENGED):
        ledger.finalize(claim_id, {"from": workers[0]})

    late = submit(ledger, workers[2], model, 1, 1)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    deadline = ledger.getClaim(late)["deadline"]
    with reverts_with("ChallengeWindowClosed", late, deadline):
        ledger.challenge(late, 0, "QmEvidence", {"from": validators[1]})


def test_a_validator_cannot_challenge_its_own_claim(ledger, model, staked, validators):
    v = validators[0]
    ledger.join(model, 0, b"v", KEY, {"from": v})
    claim_id = submit(ledger, v, model, 0, 1)
    with reverts_with("CannotChallengeOwnClaim", claim_id, v.address):
        ledger.challenge(claim_id, 0, "QmEvidence", {"from": v})


def test_voting_rules(ledger, model, members, workers, validators):
    claim_id = submit(ledger, workers[0], model, 0, 1)
    with reverts_with("WrongClaimStatus", claim_id, PENDING):
        ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.challenge(claim_id, 7, "QmEvidence", {"from": validators[0]})
    with reverts_with("NotValidator", workers[1].address):
        ledger.vote(claim_id, True, {"from": workers[1]})
    with reverts_with("CannotVoteOnOwnDispute", claim_id, validators[0].address):
        ledger.vote(claim_id, False, {"from": validators[0]})
    tx = ledger.vote(claim_id, False, {"from": validators[1]})
    assert tx.events["VoteCast"] == {"claimId": claim_id, "validator": validators[1], "claimValid": False}
    with reverts_with("AlreadyVoted", claim_id, validators[1].address):
        ledger.vote(claim_id, True, {"from": validators[1]})
    with reverts_with("NotResolvable", claim_id):
        ledger.resolve(claim_id, {"from": workers[0]})
    chain.sleep(TEST_LEDGER.vote_window + 1)
    vote_deadline = ledger.getClaim(claim_id)["voteDeadline"]
    with reverts_with("VoteWindowClosed", claim_id, vote_deadline):
        ledger.vote(claim_id, False, {"from": validators[2]})


def test_a_worker_that_validates_cannot_vote_on_its_own_claim(ledger, model, staked, validators):
    worker, challenger = validators[0], validators[1]
    ledger.join(model, 0, b"v", KEY, {"from": worker})
    claim_id = submit(ledger, worker, model, 0, 1)
    ledger.challenge(claim_id, 0, "QmEvidence", {"from": challenger})
    with reverts_with("CannotVoteOnOwnDispute", claim_id, worker.address):
        ledger.vote(claim_id, True, {"from": worker})


def test_a_refuted_claim_slashes_the_worker_and_pays_the_challenger(
    ledger, protocol, model, members, workers, validators, treasury
):
    worker, challenger = workers[0], validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})
    tx = ledger.resolve(claim_id, {"from": challenger})
    burn = ETHER * TEST_LEDGER.burn_bps // 10_000
    assert tx.events["ClaimResolved"] == {"claimId": claim_id, "outcome": REJECTED, "slashed": True}
    assert tx.events["ClaimRejected"] == {"claimId": claim_id}
    assert tx.events["Slashed"] == {
        "account": worker,
        "amount": ETHER,
        "winner": challenger,
        "toWinner": ETHER - burn,
    }
    assert stakes(ledger, worker) == (4 * ETHER, 0)
    assert stakes(ledger, challenger) == (5 * ETHER + ETHER - burn, 0)
    assert stakes(ledger, treasury) == (burn, 0)
    with reverts_with("WrongClaimStatus", claim_id, REJECTED):
        ledger.finalize(claim_id, {"from": worker})
    assert shares_of(protocol, model).totalSupply() == 0
    assert protocol.registry.checkpointOf(model, 0)[2] == 0
    assert ledger.balance() == 6 * 5 * ETHER  # slashing moves stake, it never leaves the ledger


def test_a_frivolous_challenge_costs_the_challenger(
    ledger, protocol, model, members, workers, validators, treasury
):
    worker, challenger = workers[0], validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.vote(claim_id, True, {"from": validators[2]})
    tx = ledger.resolve(claim_id, {"from": worker})
    burn = ETHER * TEST_LEDGER.burn_bps // 10_000
    assert tx.events["ClaimResolved"] == {"claimId": claim_id, "outcome": UPHELD, "slashed": True}
    assert stakes(ledger, challenger) == (4 * ETHER, 0)
    assert stakes(ledger, worker) == (5 * ETHER + ETHER - burn, ETHER)  # own bond locked until finalize
    assert stakes(ledger, treasury) == (burn, 0)
    tx = ledger.finalize(claim_id, {"from": worker})  # upheld: no need to wait for the deadline
    assert tx.events["ClaimFinalized"]["sharesMinted"] == 10 * RATE
    assert stakes(ledger, worker) == (5 * ETHER + ETHER - burn, 0)
    assert shares_of(protocol, model).balanceOf(worker) == 10 * RATE


def test_without_quorum_the_claim_is_rejected_and_nobody_is_slashed(
    ledger, protocol, model, members, workers, validators
):
    worker, challenger = workers[0], validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})
    with reverts_with("NotResolvable", claim_id):
        ledger.resolve(claim_id, {"from": worker})
    chain.sleep(TEST_LEDGER.vote_window + 1)
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"] == {"claimId": claim_id, "outcome": REJECTED, "slashed": False}
    assert "Slashed" not in tx.events
    assert stakes(ledger, worker) == (5 * ETHER, 0)
    assert stakes(ledger, challenger) == (5 * ETHER, 0)
    assert shares_of(protocol, model).totalSupply() == 0
    with reverts_with("WrongClaimStatus", claim_id, REJECTED):
        ledger.resolve(claim_id, {"from": worker})


def test_a_new_claim_in_a_lane_starts_without_the_old_dispute(ledger, model, members, workers, validators):
    worker = workers[0]
    claim_id = challenged(ledger, worker, validators[0], model)
    chain.sleep(TEST_LEDGER.vote_window + 1)
    ledger.resolve(claim_id, {"from": worker})
    fresh = submit(ledger, worker, model, 0, 2)
    claim = ledger.getClaim(fresh)
    assert claim["challenger"] == "0x" + "00" * 20
    assert (claim["votesValid"], claim["votesInvalid"], claim["voteDeadline"]) == (0, 0, 0)
    ledger.challenge(fresh, 1, "QmEvidence", {"from": validators[1]})
    ledger.vote(fresh, False, {"from": validators[0]})  # votes on the new claim are counted afresh
    assert ledger.getClaim(fresh)["votesInvalid"] == 1
