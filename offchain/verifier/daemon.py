"""`pm verifier run`: a validator of one stage of one model. It watches that stage's claims, replays
a sample of their rounds, challenges a false one at its first divergent (round, step) or as
Unavailable when its content is withheld, votes on every dispute of its stage it can judge, resolves
disputes, settles its vote bonds and finalizes the runs of due claims it judged valid.

Each loop: new WorkLedger events go into the journal (then the event cursor moves past them), and
every open claim in the journal is advanced by one look at the chain, in lane order (claim ids
sort by lane, then by sequence). A claim chained on one this validator is refuting waits: if that
one is rejected, this one is voided with it. Every deadline is compared with the latest block's
timestamp, never with this machine's clock. See journal.py for why a restart neither skips nor
repeats an action.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from web3.types import EventData

from offchain.chain.client import ContractRevert
from offchain.chain.events import EventPoller
from offchain.chain.protocol import ChallengeKind, ClaimStatus, Protocol
from offchain.chain.structs import call_struct
from offchain.errors import UserError
from offchain.storage.cids import cid_to_bytes32
from offchain.storage.store import Store
from offchain.verifier.check import SubmittedClaim, Verdict
from offchain.verifier.journal import Entry, Journal
from offchain.verifier.judge import Judge, KeySource

logger = logging.getLogger(__name__)

EVENTS = ["ClaimSubmitted", "ClaimFinalized", "ClaimRejected"]
SETTLED = (ClaimStatus.FINALIZED, ClaimStatus.REJECTED, ClaimStatus.VOIDED)


@dataclass(frozen=True)
class OnChain:
    """The fields of IWorkLedger.Claim the verifier acts on."""

    worker: str
    status: ClaimStatus
    submitted_at: int
    deadline: int
    challenger: str
    kind: ChallengeKind
    challenged_round: int
    vote_deadline: int
    voters: int

    @classmethod
    def read(cls, fields: dict[str, Any]) -> OnChain:
        return cls(
            fields["worker"],
            ClaimStatus(fields["status"]),
            fields["submittedAt"],
            fields["deadline"],
            fields["challenger"],
            ChallengeKind(fields["kind"]),
            fields["challengedRound"],
            fields["voteDeadline"],
            fields["voters"],
        )


@dataclass(frozen=True)
class VerifierConfig:
    state_dir: Path
    model_id: int
    stage: int
    probability: float = 1.0
    drivers: tuple[str, ...] = ()
    poll_interval_s: float = 0.5


def ensure_validator(protocol: Protocol, model_id: int, stage: int) -> None:
    """Stake up to minValidatorStake plus a challenge bond and a vote bond, then register as a
    validator of `stage` of the model, unless this address already is one. An address validating
    another stage of the model (or working one) is one clear error."""
    client, ledger, me = protocol.client, protocol.ledger, protocol.client.address
    registered, current, eligible_at = client.call(
        ledger.functions.validatorOf(model_id, me), action="validatorOf"
    )
    if registered and current != stage:
        raise UserError(
            f"{me} already validates stage {current} of model {model_id}: an address holds one stage "
            f"of a model (pm verifier run --stage {current}, or another key)"
        )
    member, worked = client.call(ledger.functions.stageOf(model_id, me), action="stageOf")
    if member and worked != stage:
        raise UserError(
            f"{me} works stage {worked} of model {model_id}: an address holds one stage of a model "
            f"across both roles (pm verifier run --stage {worked}, or another key)"
        )
    params = call_struct(client, ledger.functions.parameters(), "parameters")
    staked = call_struct(client, ledger.functions.stakeOf(me), "stakeOf")["staked"]
    want = params["minValidatorStake"] + params["claimBond"] + params["voteBond"]
    if staked < want:
        client.transact(ledger.functions.stake(), value=want - staked, action="stake")
        logger.info("staked %d wei (now %d)", want - staked, want)
    if registered:
        logger.info("%s validates model %d stage %d (eligible from %d)", me, model_id, stage, eligible_at)
        return
    client.transact(ledger.functions.registerValidator(model_id, stage), action="registerValidator")
    logger.info("registered %s as a validator of model %d stage %d", me, model_id, stage)


class Verifier:
    def __init__(self, protocol: Protocol, store: Store, keys: KeySource, config: VerifierConfig) -> None:
        self.protocol, self.store, self.config = protocol, store, config
        self.client, self.ledger = protocol.client, protocol.ledger
        self.me = self.client.address
        self.journal = Journal.load(config.state_dir / "journal.json")
        self.judge = Judge(protocol, store, keys, self.journal, config.drivers)
        self.poller = EventPoller(
            self.client,
            self.ledger,
            EVENTS,
            config.state_dir / "cursor.json",
            start_block=protocol.first_block(),
        )
        self._read_parameters()

    def _read_parameters(self) -> None:
        """The ledger's current parameters (the admin may change them while the daemon runs)."""
        self.params = call_struct(self.client, self.ledger.functions.parameters(), "parameters")

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        logger.info(
            "watching claims of model %d stage %d, checking each round with probability %.2f",
            self.config.model_id,
            self.config.stage,
            self.config.probability,
        )
        while not stop.is_set():
            await self.tick()
            try:
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_s)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        """Take in new events, then advance every open claim once, in lane order."""
        self._read_parameters()
        for event in self.poller.poll():
            self._take(event)
            self.journal.save()
            self.poller.done(event)
        now = self._now()
        _, _, eligible_at = self.client.call(
            self.ledger.functions.validatorOf(self.config.model_id, self.me), action="validatorOf"
        )
        for entry in self.journal.open_entries():
            await self._advance(entry, now, eligible_at)

    def _take(self, event: EventData) -> None:
        args, claim_id = event["args"], int(event["args"]["claimId"])
        entry = self.journal.entries.get(claim_id)
        if event["event"] == "ClaimSubmitted":
            claim = SubmittedClaim.from_event(args)
            if entry is None and (claim.model_id, claim.stage) == (self.config.model_id, self.config.stage):
                draw = secrets.SystemRandom()
                rounds = [r for r in claim.rounds if draw.random() < self.config.probability]
                self.journal.entries[claim_id] = Entry(claim, rounds)
                if not rounds:
                    logger.info("claim %d (rounds %s): not sampled", claim_id, _span(claim))
        elif entry is not None:  # settled: the next look at the chain settles this validator's part too
            entry.finalized = event["event"] == "ClaimFinalized"
            logger.info("claim %d: %s", claim_id, event["event"].removeprefix("Claim").lower())

    # -- per claim ------------------------------------------------------------------------------

    async def _advance(self, entry: Entry, now: int, eligible_at: int) -> None:
        """`eligible_at`: when this validator may challenge, and vote on disputes opened from then."""
        claim = entry.claim
        try:
            chain = OnChain.read(
                call_struct(self.client, self.ledger.functions.getClaim(claim.claim_id), "getClaim")
            )
        except ContractRevert as revert:
            if revert.error is None or revert.error.name != "UnknownClaim":
                raise
            self._settled(entry, finalized=False)  # its ring slot was reused: settled long ago
            return
        if entry.voted and not entry.vote_settled and chain.status != ClaimStatus.CHALLENGED:
            self._settle_vote(entry)
        if chain.status in SETTLED:
            if chain.status == ClaimStatus.VOIDED and chain.challenger.lower() == self.me.lower():
                self._send(
                    self.ledger.functions.resolve(claim.claim_id), f"challenge bond back ({claim.claim_id})"
                )
            self._settled(entry, finalized=chain.status == ClaimStatus.FINALIZED)
            return
        if self._behind_a_refuted_claim(entry):
            return
        mine = self.me.lower() in (chain.worker.lower(), chain.challenger.lower())
        if chain.status == ClaimStatus.PENDING:
            await self._pending(entry, chain, now, now >= eligible_at and not mine)
        elif chain.status == ClaimStatus.CHALLENGED:
            in_electorate = eligible_at <= self._opened_at(chain)
            if not (mine or in_electorate or entry.voted):
                # Only validators eligible when the dispute opened vote on it: no replay for a vote
                # the chain would refuse.
                logger.info("not voting on claim %d: registered after it was challenged", claim.claim_id)
                entry.voted = True
                self.journal.save()
            await self._challenged(entry, chain, now, in_electorate and not mine)
        elif chain.status == ClaimStatus.UPHELD:
            self._finalize(entry, "upheld ")

    async def _pending(self, entry: Entry, chain: OnChain, now: int, may_challenge: bool) -> None:
        if entry.verdict is None and entry.rounds:
            grace_over = now >= chain.submitted_at + self.params["availabilityGrace"]
            group_patient = now < chain.deadline - self.params["challengeWindow"] // 3
            verdict = await self.judge.claim(
                entry, entry.rounds, patient=not grace_over, group_patient=group_patient
            )
            self._record(entry, verdict)
        verdict = entry.verdict
        if verdict is None:
            return
        never_disputed = int(chain.challenger, 16) == 0  # a claim is challenged at most once
        if verdict.valid is False and now <= chain.deadline and may_challenge and never_disputed:
            self._challenge(entry, verdict)
        elif verdict.valid and now > chain.deadline and not self._later_due(entry, now):
            self._finalize(entry, "")

    async def _challenged(self, entry: Entry, chain: OnChain, now: int, may_vote: bool) -> None:
        claim = entry.claim
        if may_vote and not entry.voted and now <= chain.vote_deadline:
            if self._needs_dispute_verdict(entry):
                # The vote is on the claim, whatever the challenge names: every round is judged (a decoy
                # challenge may name an honest round of a false claim). A voter keeps trying to fetch
                # withheld content until the vote window is half over (slow is not withheld).
                patient = now < chain.vote_deadline - self.params["voteWindow"] // 2
                verdict = await self.judge.claim(entry, claim.rounds, patient=patient, group_patient=patient)
                if verdict is not None:
                    entry.rounds = list(claim.rounds)
                self._record(entry, verdict)
            if entry.verdict is not None and entry.verdict.valid is not None:
                self._vote(entry, entry.verdict, chain)
        if now > chain.vote_deadline or chain.voters >= self._eligible_voters(chain):
            self._send(self.ledger.functions.resolve(claim.claim_id), f"resolved claim {claim.claim_id}")

    def _needs_dispute_verdict(self, entry: Entry) -> bool:
        """Whether this validator's verdict so far does not answer the dispute. A vote is on the claim,
        not on the round (or the kind) the challenge names, so only a verdict on the whole claim
        answers it: invalid at any round, undecided (it abstains), or valid on every round. Not yet:
        no verdict; content it could not fetch before (voters try again: slow is not withheld); valid
        on only the rounds it sampled."""
        verdict = entry.verdict
        if verdict is None or verdict.withheld:
            return True
        return verdict.valid is True and set(entry.rounds) != set(entry.claim.rounds)

    # -- lane order -----------------------------------------------------------------------------

    def _behind_a_refuted_claim(self, entry: Entry) -> bool:
        """Whether the claim chains on an open claim this validator refutes and that is (or is about to
        be) disputed: it is voided if that one is rejected, so it waits for that dispute to end. It
        also waits while that claim, sampled, has no verdict yet (its content still on the way): the
        lane is judged in order, so a claim is never judged against a parent that may be a lie."""
        previous = self.journal.entries.get(entry.claim.previous_claim_id)
        if previous is None or previous.done:
            return False
        if previous.verdict is None:
            return bool(previous.rounds)
        if previous.verdict.valid is not False:
            return False
        fn = self.ledger.functions.getClaim(previous.claim.claim_id)
        fields = call_struct(self.client, fn, "getClaim")
        undisputed = int(fields["challenger"], 16) == 0
        return fields["status"] == ClaimStatus.CHALLENGED or (
            fields["status"] == ClaimStatus.PENDING and undisputed
        )

    def _later_due(self, entry: Entry, now: int) -> bool:
        """Whether a later claim of the same lane is also due and judged valid: finalizing that one
        finalizes this one in the same run (one transaction, one mint)."""
        return any(
            other.claim.lane == entry.claim.lane
            and other.claim.claim_id > entry.claim.claim_id
            and other.verdict is not None
            and other.verdict.valid
            and not other.done
            and self._due(other, now)
            for other in self.journal.open_entries()
        )

    def _due(self, entry: Entry, now: int) -> bool:
        fields = call_struct(self.client, self.ledger.functions.getClaim(entry.claim.claim_id), "getClaim")
        return fields["status"] == ClaimStatus.PENDING and now > fields["deadline"]

    # -- chain actions --------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.client.rpc("get_block", lambda: self.client.w3.eth.get_block("latest"))["timestamp"])

    def _send(self, fn: Any, done: str) -> bool:
        """One transaction; a revert (someone else got there first) is logged, not fatal."""
        try:
            receipt = self.client.transact(fn)
        except ContractRevert as revert:
            logger.info("%s skipped: %s", fn.fn_name, revert)
            return False
        logger.info("%s (tx %s)", done, receipt["transactionHash"].hex())
        return True

    def _record(self, entry: Entry, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        entry.verdict = verdict
        self.journal.save()
        self._log_verdict(entry.claim, verdict)

    def _settled(self, entry: Entry, *, finalized: bool) -> None:
        entry.done, entry.finalized = True, finalized
        self.journal.save()
        self.judge.forget(entry.claim.claim_id)

    def _finalize(self, entry: Entry, what: str) -> None:
        claim_id = entry.claim.claim_id
        self._send(
            self.ledger.functions.finalize(claim_id),
            f"finalized {what}claim {claim_id} and its lane before it",
        )

    def _challenge(self, entry: Entry, verdict: Verdict) -> None:
        claim = entry.claim
        if verdict.withheld:
            fn = self.ledger.functions.challengeUnavailable(claim.claim_id)
            self._send(fn, f"challenged claim {claim.claim_id} as unavailable ({verdict.reason})")
            return
        evidence = {
            "kind": "pm/verifier-evidence/v2",
            "claim": asdict(claim),
            "verifier": self.me,
            "verdict": verdict.to_json(),
        }
        manifest = self.judge.manifests.get(claim.claim_id)
        if manifest is not None:
            evidence["round_record"] = manifest.record(verdict.round).to_json()
            evidence["round_proof"] = [node.hex() for node in manifest.proof(verdict.round)]
        evidence_cid = self.store.put(json.dumps(evidence, sort_keys=True).encode())
        fn = self.ledger.functions.challenge(
            claim.claim_id, verdict.round, verdict.step, cid_to_bytes32(evidence_cid)
        )
        where = f"round {verdict.round} step {verdict.step}"
        self._send(fn, f"challenged claim {claim.claim_id} at {where}, evidence {evidence_cid}")

    def _vote(self, entry: Entry, verdict: Verdict, chain: OnChain) -> None:
        """Vote once: the chain's VoteCast events are checked first, so a vote sent just before a crash
        is never sent again. A dispute opened before this validator became eligible has no vote of
        its to send: that counts as done."""
        claim_id = entry.claim.claim_id
        if not self._voted_on_chain(claim_id):
            line = (
                f"voted claim {claim_id} {'valid' if verdict.valid else 'invalid'} "
                f"(disputed: {chain.kind.name.lower()} round {chain.challenged_round}; "
                f"my verdict: {verdict.reason or 'every step replayed'})"
            )
            try:
                receipt = self.client.transact(self.ledger.functions.vote(claim_id, bool(verdict.valid)))
            except ContractRevert as revert:
                if revert.error is None or revert.error.name != "ValidatorTooNew":
                    logger.info("vote skipped: %s", revert)
                    return
                # Eligible now, yet too new for this dispute: only validators eligible when it was
                # opened vote on it, so this one never will (asking again would only revert again).
                logger.info("not voting on claim %d: registered after it was challenged", claim_id)
            else:
                logger.info("%s (tx %s)", line, receipt["transactionHash"].hex())
        entry.voted = True
        self.journal.save()

    def _voted_on_chain(self, claim_id: int) -> bool:
        logs = self.client.rpc(
            "get_logs VoteCast",
            lambda: self.ledger.events.VoteCast().get_logs(
                from_block=self.protocol.first_block(),
                argument_filters={"claimId": claim_id, "validator": self.me},
            ),
        )
        return bool(logs)

    def _settle_vote(self, entry: Entry) -> None:
        """The vote bond back once the dispute ended (NothingToSettle: it already came back)."""
        claim_id = entry.claim.claim_id
        try:
            receipt = self.client.transact(self.ledger.functions.settleVote(claim_id))
        except ContractRevert as revert:
            if revert.error is None or revert.error.name != "NothingToSettle":
                logger.info("settleVote skipped: %s", revert)
                return
        else:
            logger.info("settled my vote on claim %d (tx %s)", claim_id, receipt["transactionHash"].hex())
        entry.vote_settled = True
        self.journal.save()

    def _eligible_voters(self, chain: OnChain) -> int:
        """Validators of the stage who may vote on this dispute (eligible when it was opened, neither
        the worker nor the challenger): once all of them voted, it can be resolved before the window
        ends. (Had the owner changed voteWindow since it opened, the chain would refuse an early
        resolve or this one would wait for the end.)"""
        opened_at = self._opened_at(chain)
        model_id, stage = self.config.model_id, self.config.stage
        validators = self.client.call(
            self.ledger.functions.validatorsOf(model_id, stage), action="validatorsOf"
        )
        parties = {chain.worker.lower(), chain.challenger.lower()}
        count = 0
        for validator in validators:
            if validator.lower() in parties:
                continue
            _, _, eligible_at = self.client.call(
                self.ledger.functions.validatorOf(model_id, validator), action="validatorOf"
            )
            count += eligible_at <= opened_at
        return count

    def _opened_at(self, chain: OnChain) -> int:
        """When the dispute opened: one voteWindow before its vote deadline (the window as read now)."""
        return chain.vote_deadline - self.params["voteWindow"]

    def _log_verdict(self, claim: SubmittedClaim, verdict: Verdict) -> None:
        result = {True: "valid", False: "INVALID", None: "undecided"}[verdict.valid]
        logger.info(
            "verdict claim=%d model=%d stage=%d rounds=%s result=%s%s round=%s step=%s steps_checked=%d "
            "reason=%s expected=%s actual=%s",
            claim.claim_id,
            claim.model_id,
            claim.stage,
            _span(claim),
            result,
            " (withheld)" if verdict.withheld else "",
            "-" if verdict.round is None else verdict.round,
            "-" if verdict.step is None else verdict.step,
            verdict.steps_checked,
            verdict.reason or "-",
            verdict.expected or claim.checkpoint_digest,
            verdict.actual or claim.checkpoint_digest,
        )


def _span(claim: SubmittedClaim) -> str:
    return (
        str(claim.first_round)
        if claim.first_round == claim.last_round
        else f"{claim.first_round}..{claim.last_round}"
    )
