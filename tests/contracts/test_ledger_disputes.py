"""WorkLedger disputes: challenges (Divergence, Unavailable), stake-weighted votes with vote bonds,
resolve after the vote window or once every eligible stage validator voted, the three outcomes,
and settleVote."""

import pytest
from brownie import chain
from conftest import ETHER, TEST_LEDGER, stakes, submit, submit_chain
from custom_errors import reverts_with

from offchain.chain.protocol import ChallengeKind, ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32
BOND = TEST_LEDGER.claim_bond
VOTE_BOND = TEST_LEDGER.vote_bond
BURN = BOND * TEST_LEDGER.burn_bps // 10_000


@pytest.fixture
def worker(ledger, model, staked, workers, stage_validators):
    """workers[0] on stage 0; every validator validates stage 0 (eligible)."""
    ledger.join(model, 0, b"a", KEY, {"from": workers[0]})
    return workers[0]


def challenged(ledger, worker, challenger, model, rounds=1):
    [claim_id] = submit_chain(ledger, worker, model, 0, 1, rounds=rounds)
    ledger.challenge(claim_id, 1, 7, EVIDENCE, {"from": challenger})
    return claim_id


def test_a_divergence_challenge_names_a_round_of_the_claim(ledger, model, worker, validators):
    [claim_id] = submit_chain(ledger, worker, model, 0, 1, first=1, rounds=5)
    challenger = validators[0]
    for outside in (0, 6):
        with reverts_with("RoundOutsideClaim", claim_id, outside):
            ledger.challenge(claim_id, outside, 0, EVIDENCE, {"from": challenger})
    tx = ledger.challenge(claim_id, 3, 17, EVIDENCE, {"from": challenger})
    assert tx.events["ClaimChallenged"] == {
        "claimId": claim_id,
        "challenger": challenger,
        "kind": ChallengeKind.DIVERGENCE,
        "round": 3,
        "stepIndex": 17,
        "evidenceCID": EVIDENCE,
    }
    claim = ledger.getClaim(claim_id)
    assert (claim["status"], claim["challenger"], claim["kind"]) == (
        ClaimStatus.CHALLENGED,
        challenger,
        ChallengeKind.DIVERGENCE,
    )
    assert (claim["challengedRound"], claim["challengedStep"]) == (3, 17)
    assert claim["voteDeadline"] == tx.timestamp + TEST_LEDGER.vote_window
    assert stakes(ledger, challenger) == (5 * ETHER, BOND)
    with reverts_with("AlreadyChallenged", claim_id, challenger.address):
        ledger.challenge(claim_id, 3, 1, EVIDENCE, {"from": validators[1]})
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.CHALLENGED):
        ledger.finalize(claim_id, {"from": worker})


def test_an_unavailable_challenge_waits_for_the_grace_period(ledger, model, worker, validators):
    claim_id = submit(ledger, worker, model, 0, 1)
    grace_ends = ledger.getClaim(claim_id)["submittedAt"] + TEST_LEDGER.availability_grace
    with reverts_with("AvailabilityGraceNotOver", claim_id, grace_ends):
        ledger.challengeUnavailable(claim_id, {"from": validators[0]})
    chain.sleep(TEST_LEDGER.availability_grace)
    tx = ledger.challengeUnavailable(claim_id, {"from": validators[0]})
    assert tx.events["ClaimChallenged"]["kind"] == ChallengeKind.UNAVAILABLE
    assert (tx.events["ClaimChallenged"]["round"], tx.events["ClaimChallenged"]["stepIndex"]) == (0, 0)
    assert ledger.getClaim(claim_id)["kind"] == ChallengeKind.UNAVAILABLE
    with reverts_with("AlreadyChallenged", claim_id, validators[0].address):
        ledger.challengeUnavailable(claim_id, {"from": validators[1]})


def test_a_validator_cannot_challenge_its_own_claim(ledger, model, worker, validators):
    v = validators[0]  # validates stage 0 and works it too
    ledger.join(model, 0, b"v", KEY, {"from": v})
    claim_id = submit(ledger, v, model, 0, 1)
    with reverts_with("CannotChallengeOwnClaim", claim_id, v.address):
        ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": v})


def test_voting_rules(ledger, model, worker, validators, workers):
    claim_id = submit(ledger, worker, model, 0, 1)
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.PENDING):
        ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.challenge(claim_id, 1, 7, EVIDENCE, {"from": validators[0]})
    with reverts_with("NotStageValidator", model, 0, workers[1].address):
        ledger.vote(claim_id, True, {"from": workers[1]})
    with reverts_with("CannotVoteOnOwnDispute", claim_id, validators[0].address):
        ledger.vote(claim_id, False, {"from": validators[0]})
    tx = ledger.vote(claim_id, False, {"from": validators[1]})
    assert tx.events["VoteCast"] == {
        "claimId": claim_id,
        "validator": validators[1],
        "claimValid": False,
        "weight": 5 * ETHER,
    }
    assert stakes(ledger, validators[1]) == (5 * ETHER, VOTE_BOND)
    with reverts_with("AlreadyVoted", claim_id, validators[1].address):
        ledger.vote(claim_id, True, {"from": validators[1]})
    claim = ledger.getClaim(claim_id)
    assert (claim["voters"], claim["weightValid"], claim["weightInvalid"]) == (1, 0, 5 * ETHER)
    chain.sleep(TEST_LEDGER.vote_window + 1)
    with reverts_with("VoteWindowClosed", claim_id, claim["voteDeadline"]):
        ledger.vote(claim_id, False, {"from": validators[2]})


def test_a_worker_that_validates_cannot_vote_on_its_own_claim(ledger, model, worker, validators):
    worker_validator, challenger = validators[0], validators[1]
    ledger.join(model, 0, b"v", KEY, {"from": worker_validator})
    claim_id = submit(ledger, worker_validator, model, 0, 1)
    ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": challenger})
    with reverts_with("CannotVoteOnOwnDispute", claim_id, worker_validator.address):
        ledger.vote(claim_id, True, {"from": worker_validator})


def test_resolve_waits_for_the_window_unless_every_eligible_validator_voted(
    ledger, model, worker, validators
):
    claim_id = challenged(ledger, worker, validators[0], model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    deadline = ledger.getClaim(claim_id)["voteDeadline"]
    with reverts_with("VoteWindowOpen", claim_id, deadline):
        ledger.resolve(claim_id, {"from": worker})
    ledger.vote(claim_id, False, {"from": validators[2]})  # the last eligible voter
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.REJECTED


def test_a_validator_that_cannot_vote_does_not_hold_up_early_resolution(ledger, model, worker, validators):
    """One below minValidatorStake can neither vote nor keep the others waiting for the window."""
    claim_id = challenged(ledger, worker, validators[0], model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.requestUnstake(4 * ETHER, {"from": validators[2]})  # 1 ETH left, below the 2 ETH minimum
    tx = ledger.resolve(claim_id, {"from": worker})  # inside the vote window
    assert tx.timestamp <= ledger.getClaim(claim_id)["voteDeadline"]
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING  # one voter, quorum is 2


def test_a_refuted_claim_slashes_the_worker_and_pays_the_challenger(
    ledger, protocol, model, worker, validators, treasury
):
    challenger = validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})
    tx = ledger.resolve(claim_id, {"from": challenger})
    assert tx.events["ClaimResolved"] == {
        "claimId": claim_id,
        "outcome": ClaimStatus.REJECTED,
        "slashed": True,
    }
    assert tx.events["ClaimRejected"] == {"claimId": claim_id}
    assert "LaneVoided" not in tx.events  # no later claim to void
    assert tx.events["Slashed"] == {
        "account": worker,
        "amount": BOND,
        "winner": challenger,
        "toWinner": BOND - BURN,
    }
    assert stakes(ledger, worker) == (5 * ETHER - BOND, 0)
    assert stakes(ledger, challenger) == (5 * ETHER + BOND - BURN, 0)
    assert stakes(ledger, treasury) == (BURN, 0)
    assert ledger.getClaim(claim_id)["status"] == ClaimStatus.REJECTED
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.REJECTED):
        ledger.finalize(claim_id, {"from": worker})
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.REJECTED):
        ledger.resolve(claim_id, {"from": worker})
    assert protocol.registry.checkpointOf(model, 0)[2] == 0


def test_a_frivolous_challenge_costs_the_challenger(ledger, model, worker, validators, treasury):
    challenger = validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.vote(claim_id, True, {"from": validators[2]})
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"] == {"claimId": claim_id, "outcome": ClaimStatus.UPHELD, "slashed": True}
    assert stakes(ledger, challenger) == (5 * ETHER - BOND, 0)
    assert stakes(ledger, worker) == (5 * ETHER + BOND - BURN, BOND)  # own bond locked until finalize
    tx = ledger.finalize(claim_id, {"from": worker})  # upheld: due before its deadline
    assert tx.events["ClaimFinalized"]["sharesMinted"] == 10 * 3 * ETHER
    assert stakes(ledger, worker) == (5 * ETHER + BOND - BURN, 0)


def test_without_a_decision_the_claim_stands_and_the_challenger_pays(
    ledger, model, worker, validators, treasury
):
    challenger = validators[0]
    claim_id = challenged(ledger, worker, challenger, model)
    ledger.vote(claim_id, True, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})  # equal stakes: a tie
    tx = ledger.resolve(claim_id, {"from": worker})
    penalty = BOND * TEST_LEDGER.no_quorum_slash_bps // 10_000
    burn = penalty * TEST_LEDGER.burn_bps // 10_000
    assert tx.events["ClaimResolved"] == {
        "claimId": claim_id,
        "outcome": ClaimStatus.PENDING,
        "slashed": True,
    }
    assert tx.events["Slashed"] == {
        "account": challenger,
        "amount": penalty,
        "winner": worker,
        "toWinner": penalty - burn,
    }
    assert stakes(ledger, challenger) == (5 * ETHER - penalty, 0)
    assert stakes(ledger, worker) == (5 * ETHER + penalty - burn, BOND)
    claim = ledger.getClaim(claim_id)
    assert claim["status"] == ClaimStatus.PENDING
    with reverts_with("AlreadyChallenged", claim_id, challenger.address):
        ledger.challenge(claim_id, 1, 0, EVIDENCE, {"from": validators[1]})
    with reverts_with("ChallengeWindowOpen", claim_id, claim["deadline"]):
        ledger.finalize(claim_id, {"from": worker})
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(claim_id, {"from": worker})


def test_fewer_voters_than_the_quorum_decide_nothing(ledger, model, worker, validators):
    claim_id = challenged(ledger, worker, validators[0], model)
    ledger.vote(claim_id, False, {"from": validators[1]})  # quorum is 2
    chain.sleep(TEST_LEDGER.vote_window + 1)
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING


def test_votes_weigh_by_stake(ledger, model, worker, validators, accounts):
    heavy = accounts[1]
    ledger.stake({"from": heavy, "value": 20 * ETHER})
    ledger.registerValidator(model, 0, {"from": heavy})
    chain.sleep(TEST_LEDGER.validator_delay)
    claim_id = challenged(ledger, worker, validators[0], model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.vote(claim_id, False, {"from": validators[2]})
    ledger.vote(claim_id, True, {"from": heavy})  # 20 ETH against 2 x 5 ETH
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.UPHELD


def test_a_vote_weighs_the_stake_at_vote_time(ledger, model, worker, validators):
    claim_id = challenged(ledger, worker, validators[0], model)
    ledger.vote(claim_id, False, {"from": validators[1]})
    ledger.vote(claim_id, True, {"from": validators[2]})
    ledger.stake({"from": validators[2], "value": ETHER})  # too late to count
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.PENDING  # 5 ETH each: a tie


def test_losing_voters_lose_part_of_their_vote_bond(ledger, model, worker, validators, treasury):
    loser, winner = validators[1], validators[2]
    ledger.stake({"from": winner, "value": ETHER})
    claim_id = challenged(ledger, worker, validators[0], model)
    with reverts_with("NothingToSettle", claim_id, loser.address):
        ledger.settleVote(claim_id, {"from": loser})
    ledger.vote(claim_id, False, {"from": loser})
    with reverts_with("WrongClaimStatus", claim_id, ClaimStatus.CHALLENGED):
        ledger.settleVote(claim_id, {"from": loser})
    ledger.vote(claim_id, True, {"from": winner})  # 6 ETH against 5: the worker wins
    tx = ledger.resolve(claim_id, {"from": worker})
    assert tx.events["ClaimResolved"]["outcome"] == ClaimStatus.UPHELD
    slash = VOTE_BOND * TEST_LEDGER.loser_vote_slash_bps // 10_000
    tx = ledger.settleVote(claim_id, {"from": loser})
    assert tx.events["VoteSettled"] == {"claimId": claim_id, "validator": loser, "slashed": slash}
    tx = ledger.settleVote(claim_id, {"from": winner})
    assert tx.events["VoteSettled"] == {"claimId": claim_id, "validator": winner, "slashed": 0}
    assert stakes(ledger, loser) == (5 * ETHER - slash, 0)
    assert stakes(ledger, winner) == (6 * ETHER, 0)
    assert stakes(ledger, treasury) == (BURN + slash, 0)  # the challenger's burn and the voter's slash
    with reverts_with("NothingToSettle", claim_id, loser.address):
        ledger.settleVote(claim_id, {"from": loser})
