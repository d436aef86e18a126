"""Parameter changes while claims are open: bonds, deadlines and vote windows are fixed when a claim,
a challenge or a vote is made, so the owner cannot lengthen a window that is running, nor make an
open claim, challenge or vote lose more than it locked. (Rates and the quorum are read when a
dispute is resolved: see the threat model.)"""

from brownie import chain
from conftest import ETHER, TEST_LEDGER, stakes, submit_chain
from custom_errors import reverts_with

from offchain.chain.protocol import ClaimStatus

KEY = b"\x07" * 32
EVIDENCE = "0x" + "ee" * 32
BOND = TEST_LEDGER.claim_bond
PENALTY = BOND * TEST_LEDGER.no_quorum_slash_bps // 10_000
PENALTY_BURNT = PENALTY * TEST_LEDGER.burn_bps // 10_000
NEW_TERMS = {"claimBond": 3 * ETHER, "challengeWindow": 1_000, "voteWindow": 1_000, "voteBond": ETHER}


def test_open_claims_disputes_and_votes_keep_their_terms(
    ledger, model, staked, stage_validators, workers, validators, accounts
):
    worker, challenger, voter, late = workers[0], *validators
    ledger.join(model, 0, b"a", KEY, {"from": worker})
    first, second = submit_chain(ledger, worker, model, 0, 2)
    ledger.challenge(first, 1, 7, EVIDENCE, {"from": challenger})
    ledger.vote(first, False, {"from": voter})
    before = {claim_id: ledger.getClaim(claim_id) for claim_id in (first, second)}
    for name, value in NEW_TERMS.items():
        ledger.setParameter(name.encode().ljust(32, b"\0"), value, {"from": accounts[0]})

    for claim_id, claim in before.items():
        after = ledger.getClaim(claim_id)
        assert (after["bond"], after["deadline"], after["voteDeadline"]) == (
            claim["bond"],
            claim["deadline"],
            claim["voteDeadline"],
        )
    vote_deadline = before[first]["voteDeadline"]
    with reverts_with("VoteWindowOpen", first, vote_deadline):
        ledger.resolve(first, {"from": challenger})
    chain.sleep(TEST_LEDGER.vote_window + 1)
    with reverts_with("VoteWindowClosed", first, vote_deadline):
        ledger.vote(first, True, {"from": late})
    ledger.resolve(first, {"from": challenger})  # one voter, quorum 2: the claim stands
    assert ledger.getClaim(first)["status"] == ClaimStatus.PENDING
    assert stakes(ledger, challenger) == (5 * ETHER - PENALTY, 0)  # of the bond it locked

    ledger.settleVote(first, {"from": voter})
    assert stakes(ledger, voter) == (5 * ETHER, 0)  # the vote bond it locked, not the new one
    ledger.finalize(second, {"from": worker})  # both due by their own deadlines
    assert stakes(ledger, worker) == (5 * ETHER + PENALTY - PENALTY_BURNT, 0)
