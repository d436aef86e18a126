"""The worker's claim journal: a claim file is the one write that takes rounds, so after any crash a
round is either in exactly one claim in play or free; an abandoned claim frees its rounds; a dropped
round is never offered again; settled claims leave the set in play with their rounds (kept under
settled/); everything reads back the same from disk."""

import hashlib
import json

from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import PublishedRound
from offchain.worker.journal import ClaimEntry, ClaimJournal, ClaimState, RoundEntry


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def published(swarm_round: int) -> RoundEntry:
    stored = PublishedRound(
        swarm_round, f"QmCk{swarm_round}", digest(f"ck{swarm_round}"), f"QmTr{swarm_round}", digest("t"), 8
    )
    return RoundEntry(
        stored, digest(f"s{swarm_round - 1}"), digest(f"s{swarm_round}"), 100 + swarm_round, swarm_round
    )


def claim(rounds: list[RoundEntry], first_chain_round: int) -> ClaimEntry:
    records = tuple(e.published.record(first_chain_round + i) for i, e in enumerate(rounds))
    manifest = ClaimManifest(1, 2, None, records)
    return ClaimEntry(
        manifest,
        "QmManifest",
        tuple(e.round for e in rounds),
        rounds[0].parent_digest,
        rounds[-1].state_digest,
        7,
    )


def test_rounds_are_taken_by_one_claim_and_settled_with_it(tmp_path):
    journal = ClaimJournal(tmp_path)
    rounds = [journal.put_round(published(r)) for r in range(1, 7)]
    first = journal.put_claim(claim(rounds[:2], 1))
    assert [e.round for e in journal.unclaimed_rounds()] == [3, 4, 5, 6]
    assert journal.claim_of_round(2) == first and journal.claim_of_round(3) is None
    sending = journal.update_claim(first, state=ClaimState.SENDING, tx="0xabc")

    reopened = ClaimJournal(tmp_path)  # what a restarted worker reads
    assert reopened.claims() == [sending] and reopened.rounds() == rounds
    assert reopened.claims_in(ClaimState.SENDING) == [sending]
    submitted = reopened.update_claim(sending, state=ClaimState.SUBMITTED, claim_id=5, deadline=99)
    assert reopened.claim_by_id(5) == submitted

    later = reopened.put_claim(claim(rounds[2:4], 3))
    reopened.update_claim(later, state=ClaimState.ABANDONED)  # settled alone: its rounds are free again
    assert [e.round for e in reopened.unclaimed_rounds()] == [3, 4, 5, 6]
    reopened.drop_round(rounds[2])
    reopened.update_claim(submitted, state=ClaimState.FINALIZED)  # settled with its rounds

    settled = ClaimJournal(tmp_path)
    assert settled.claims() == [] and [e.round for e in settled.rounds()] == [4, 5, 6]
    assert [e.round for e in settled.unclaimed_rounds()] == [4, 5, 6]
    assert settled.claim_by_id(5) is None and settled.claim_of_round(1) is None
    kept = sorted(path.name for path in (tmp_path / "settled").iterdir())
    assert kept == [
        "claim-000000000001.json",
        "claim-000000000003.json",
        "round-000000000001.json",
        "round-000000000002.json",
        "round-000000000003.json",
    ]
    finalized = json.loads((tmp_path / "settled" / "claim-000000000001.json").read_text())
    assert (finalized["state"], finalized["claim_id"]) == ("finalized", 5)
    assert json.loads((tmp_path / "settled" / "round-000000000003.json").read_text())["status"] == "dropped"
    assert ClaimState.VOIDED.terminal and not ClaimState.SUBMITTED.terminal
    assert claim(rounds[:2], 1).rounds == "rounds 1..2" and claim(rounds[4:5], 3).rounds == "round 3"
