"""`pm verifier run`: watch claims, replay a sample of them, challenge the false ones, vote on every
dispute it can judge, resolve disputes and finalize claims it judged valid.

Each loop: new WorkLedger events go into the journal (then the event cursor moves past them), and
every open claim in the journal is advanced by one look at the chain. Every deadline is compared
with the latest block's timestamp, never with this machine's clock. See journal.py for why a
restart neither skips nor repeats an action.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3.types import EventData

from offchain.chain.client import ContractRevert
from offchain.chain.events import EventPoller
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.chain.retry import is_transient
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.storage.crypto import StageKey
from offchain.storage.errors import ContentUnavailable, StorageError
from offchain.storage.store import Store
from offchain.swarm.keyshare import StageKeyUnavailable
from offchain.verifier.check import Replayed, SubmittedClaim, Verdict, judge_group, replay_claim
from offchain.verifier.content import Refused, open_checkpoint, open_spec, open_trace, stage_limits
from offchain.verifier.journal import MAX_REPLAYS, Entry, Journal
from offchain.verifier.limits import StageLimits

logger = logging.getLogger(__name__)

EVENTS = ["ClaimSubmitted", "ClaimChallenged", "ClaimFinalized", "ClaimRejected"]
KeySource = Callable[[ModelSpec, int, int], Awaitable[StageKey]]
"""(spec, model id, stage) -> that stage's key (a validator is granted it by a stage member)."""


class Undecidable(Exception):
    """This validator cannot judge the claim, and nothing in the claim's own content is at fault (its
    parent checkpoint is unusable, its replay never finished): no challenge, no vote."""


@dataclass(frozen=True)
class OnChain:
    """The fields of IWorkLedger.Claim the verifier acts on."""

    worker: str
    status: ClaimStatus
    deadline: int
    challenger: str
    vote_deadline: int
    votes_valid: int
    votes_invalid: int

    @classmethod
    def from_call(cls, raw: tuple) -> OnChain:
        return cls(raw[0], ClaimStatus(raw[3]), raw[6], raw[8], raw[9], raw[11], raw[12])


@dataclass(frozen=True)
class VerifierConfig:
    state_dir: Path
    probability: float = 1.0
    model_id: int | None = None
    drivers: tuple[str, ...] = ()
    poll_interval_s: float = 0.5


class Verifier:
    def __init__(self, protocol: Protocol, store: Store, keys: KeySource, config: VerifierConfig) -> None:
        self.protocol, self.store, self.keys, self.config = protocol, store, keys, config
        self.client, self.ledger = protocol.client, protocol.ledger
        self.me = self.client.address
        self.journal = Journal.load(config.state_dir / "journal.json")
        self.poller = EventPoller(
            self.client,
            self.ledger,
            EVENTS,
            config.state_dir / "cursor.json",
            start_block=protocol.first_block(),
        )
        self._read_parameters()
        self.stages: dict[tuple[int, int], tuple[ModelSpec, StageLimits] | str] = {}
        """(model, stage) -> its spec and limits, or why its claims are refused."""
        self.end_states: dict[int, bytes] = {}
        self.waiting: set[int] = set()
        """Claims whose content or stage key is not there yet (logged once each)."""

    def _read_parameters(self) -> None:
        """The ledger's current parameters (the admin may change them while the daemon runs)."""
        params = self.client.call(self.ledger.functions.parameters(), action="parameters")
        self.challenge_window, self.claim_bond, self.quorum = params[0], params[1], params[3]
        self.min_validator_stake = params[8]

    # -- setup ----------------------------------------------------------------------------------

    def ensure_validator(self) -> None:
        """Stake up to minValidatorStake plus one challenge bond, then registerValidator, if needed."""
        staked, locked, _, validator, *_ = self.client.call(
            self.ledger.functions.stakeOf(self.me), action="stakeOf"
        )
        want = self.min_validator_stake + self.claim_bond
        if staked < want:
            self.client.transact(self.ledger.functions.stake(), value=want - staked, action="stake")
            logger.info("staked %d wei (now %d)", want - staked, want)
        if not validator:
            self.client.transact(self.ledger.functions.registerValidator(), action="registerValidator")
            logger.info("registered %s as a validator", self.me)
        else:
            logger.info("%s is a validator (stake %d wei, %d locked)", self.me, max(staked, want), locked)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        logger.info(
            "watching claims%s, checking each with probability %.2f",
            "" if self.config.model_id is None else f" of model {self.config.model_id}",
            self.config.probability,
        )
        while not stop.is_set():
            await self.tick()
            try:
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_s)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        """Take in new events, then advance every open claim once."""
        self._read_parameters()
        for event in self.poller.poll():
            self._take(event)
            self.journal.save()
            self.poller.done(event)
        for entry in self.journal.open_entries():
            await self._advance(entry)

    def _take(self, event: EventData) -> None:
        args, claim_id = event["args"], int(event["args"]["claimId"])
        entry = self.journal.entries.get(claim_id)
        if event["event"] == "ClaimSubmitted":
            claim = SubmittedClaim.from_event(args)
            if entry is None and self._watched(claim.model_id):
                sampled = secrets.SystemRandom().random() < self.config.probability
                self.journal.entries[claim_id] = Entry(claim, sampled)
                if not sampled:
                    logger.info(
                        "claim %d (stage %d round %d): not sampled", claim_id, claim.stage, claim.round
                    )
        elif entry is None:
            return
        elif event["event"] == "ClaimChallenged":
            entry.dispute = (str(args["challenger"]), int(args["stepIndex"]))
        elif event["event"] in ("ClaimFinalized", "ClaimRejected"):
            entry.done, entry.finalized = True, event["event"] == "ClaimFinalized"
            logger.info("claim %d: %s", claim_id, event["event"].removeprefix("Claim").lower())

    def _watched(self, model_id: int) -> bool:
        return self.config.model_id is None or model_id == self.config.model_id

    # -- per claim ------------------------------------------------------------------------------

    async def _advance(self, entry: Entry) -> None:
        claim = entry.claim
        try:
            chain = OnChain.from_call(
                self.client.call(self.ledger.functions.getClaim(claim.claim_id), action="getClaim")
            )
        except ContractRevert as revert:
            if revert.error is None or revert.error.name != "UnknownClaim":
                raise
            entry.done = True  # superseded in its lane: settled long ago
            self.journal.save()
            return
        if chain.status in (ClaimStatus.FINALIZED, ClaimStatus.REJECTED):
            entry.done, entry.finalized = True, chain.status == ClaimStatus.FINALIZED
            self.journal.save()
            return
        now = self._now()
        mine = self.me.lower() in (chain.worker.lower(), chain.challenger.lower())
        disputed = entry.dispute is not None and chain.status == ClaimStatus.CHALLENGED and not mine
        if entry.verdict is None and (entry.sampled or disputed):
            entry.verdict = await self._judge(entry, chain, now)
            if entry.verdict is not None:
                self.journal.save()
                self._log_verdict(claim, entry.verdict)
        verdict = entry.verdict
        if chain.status == ClaimStatus.PENDING:
            if verdict is not None and verdict.valid is False and now < chain.deadline and not mine:
                self._challenge(entry, verdict)
            elif verdict is not None and verdict.valid and now > chain.deadline:
                self._send(
                    self.ledger.functions.finalize(claim.claim_id), f"finalized claim {claim.claim_id}"
                )
        elif chain.status == ClaimStatus.CHALLENGED:
            if disputed and verdict is not None and verdict.valid is not None and not entry.voted:
                if now <= chain.vote_deadline:
                    self._vote(entry, verdict)
            settled = max(chain.votes_valid, chain.votes_invalid) >= self.quorum
            if settled or now > chain.vote_deadline:
                self._send(self.ledger.functions.resolve(claim.claim_id), f"resolved claim {claim.claim_id}")
        elif chain.status == ClaimStatus.UPHELD:
            self._send(
                self.ledger.functions.finalize(claim.claim_id), f"finalized upheld claim {claim.claim_id}"
            )

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

    def _challenge(self, entry: Entry, verdict: Verdict) -> None:
        claim = entry.claim
        evidence = {
            "kind": "pm/verifier-evidence/v1",
            "claim": claim.__dict__,
            "verifier": self.me,
            "verdict": verdict.to_json(),
        }
        evidence_cid = self.store.put(json.dumps(evidence, sort_keys=True).encode())
        fn = self.ledger.functions.challenge(claim.claim_id, verdict.step, evidence_cid)
        self._send(fn, f"challenged claim {claim.claim_id} at step {verdict.step}, evidence {evidence_cid}")

    def _vote(self, entry: Entry, verdict: Verdict) -> None:
        """Vote once: the chain's VoteCast events are checked first, so a vote sent just before a crash
        is never sent again."""
        claim_id = entry.claim.claim_id
        if not self._voted_on_chain(claim_id):
            line = (
                f"voted claim {claim_id} {'valid' if verdict.valid else 'invalid'} "
                f"(disputed step {entry.dispute[1]}, my first divergent step {verdict.step})"
            )
            if not self._send(self.ledger.functions.vote(claim_id, bool(verdict.valid)), line):
                return
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

    # -- judging --------------------------------------------------------------------------------

    async def _judge(self, entry: Entry, chain: OnChain, now: int) -> Verdict | None:
        """The claim's verdict, or None to look again later (content not yet available, replicas
        still to claim) while the grace period lasts. Whatever the claim's content is, this returns:
        content that is wrong refutes the claim, content withheld past the grace period too; what
        this validator cannot judge, and any failure of its own, is a verdict of None with the
        reason (journaled, so a restart does not try it again)."""
        claim = entry.claim
        patient = now < chain.deadline - self.challenge_window // 3
        try:
            replayed = await self._replay(entry)
        except Refused as refusal:
            return Verdict(claim.claim_id, False, 0, str(refusal))
        except (StageKeyUnavailable, ContentUnavailable) as error:
            if patient:
                if claim.claim_id not in self.waiting:
                    logger.warning("claim %d: %s; waiting for the grace period", claim.claim_id, error)
                    self.waiting.add(claim.claim_id)
                return None
            return Verdict(claim.claim_id, False, 0, f"withheld past the grace period: {error}")
        except Undecidable as error:
            return Verdict(claim.claim_id, None, reason=str(error))
        except StorageError as error:  # this validator's own store (Kubo down): not the claim's doing
            logger.warning("claim %d: cannot fetch its content (%s); trying again", claim.claim_id, error)
            return None
        except Exception as error:
            if is_transient(error):
                raise
            logger.exception("claim %d: judging it failed", claim.claim_id)
            return Verdict(claim.claim_id, None, reason=f"verifier error: {error!r}")
        if replayed.verdict is not None:
            return replayed.verdict
        states = []
        for member in self.journal.group(claim):
            state = self.end_states.get(member.claim.claim_id)
            if state is None and member is not entry:
                state = await self._member_state(member)
            if state is not None:
                states.append(state)
        members = self.client.call(
            self.ledger.functions.membersOf(claim.model_id, claim.stage), action="membersOf"
        )
        spec, _ = self._stage(claim.model_id, claim.stage)
        verdict = judge_group(spec, claim, states, complete=len(states) >= len(members))
        return None if verdict.valid is None and patient else verdict

    async def _member_state(self, member: Entry) -> bytes | None:
        """A replica's replayed end state, or None when it has none to give (its own claim fails)."""
        try:
            await self._replay(member)
        except (Refused, Undecidable, StageKeyUnavailable, StorageError):
            return None
        return self.end_states.get(member.claim.claim_id)

    async def _replay(self, entry: Entry) -> Replayed:
        """Fetch, decode and check one claim's content under the stage's limits, then replay it (in a
        thread: the P2P node keeps serving meanwhile). Refused: its content refutes it."""
        claim = entry.claim
        spec, limits = self._stage(claim.model_id, claim.stage)
        key = await self.keys(spec, claim.model_id, claim.stage)
        trace = open_trace(self.store, key, claim.trace_cid, bytes.fromhex(claim.trace_root), limits)
        open_checkpoint(self.store, key, claim.checkpoint_cid, bytes.fromhex(claim.checkpoint_digest), limits)
        parent = self._parent(spec, claim, key, limits)
        if entry.replays >= MAX_REPLAYS:
            raise Undecidable(f"its replay started {entry.replays} times and never finished")
        logger.info(
            "claim %d (stage %d round %d): replaying %d steps from parent %s",
            claim.claim_id,
            claim.stage,
            claim.round,
            len(trace.records),
            claim.parent_cid or "(seed state)",
        )
        entry.replays += 1
        self.journal.save()
        replayed = await asyncio.to_thread(
            replay_claim, spec, claim, parent, trace, signers=self._signers(spec, claim)
        )
        entry.replays = 0
        self.journal.save()
        if replayed.state is not None:
            self.end_states[claim.claim_id] = replayed.state
        return replayed

    def _stage(self, model_id: int, stage: int) -> tuple[ModelSpec, StageLimits]:
        """The model's spec and the stage's limits, or Refused for every claim of a stage that cannot
        be judged (a spec that is not one, names an unknown data set, or asks more than the limits)."""
        if (model_id, stage) not in self.stages:
            spec_cid = self.protocol.model(model_id).spec_cid
            try:
                spec = open_spec(self.store, spec_cid)
                self.stages[model_id, stage] = (spec, stage_limits(spec, stage, spec_cid))
            except Refused as refusal:
                self.stages[model_id, stage] = str(refusal)
        found = self.stages[model_id, stage]
        if isinstance(found, str):
            raise Refused(found)
        return found

    def _parent(self, spec: ModelSpec, claim: SubmittedClaim, key: StageKey, limits: StageLimits) -> bytes:
        """The state the round must start from: the spec's seeded init for a stage's first claim, else
        the checkpoint at parentCID, checked against the digest the chain holds for it."""
        if not claim.parent_cid:
            return StageTrainer(spec, claim.stage, model_id=claim.model_id).state_bytes()
        digest = self._parent_digest(claim)
        try:
            return open_checkpoint(self.store, key, claim.parent_cid, digest, limits)
        except Refused as refusal:
            raise Undecidable(f"its parent checkpoint is unusable: {refusal}") from None

    def _parent_digest(self, claim: SubmittedClaim) -> bytes:
        """What the chain says the parent checkpoint's digest is: the stage's finalized checkpoint
        when it still is the parent, else the digest of the claim whose finalization made it so
        (from that claim's ClaimSubmitted event). Never what a claim merely names."""
        checkpoint = self.protocol.registry.functions.checkpointOf(claim.model_id, claim.stage)
        cid, digest, _ = self.client.call(checkpoint, action="checkpointOf")
        if cid == claim.parent_cid:
            return bytes(digest)
        finalized = [
            entry.claim
            for entry in self.journal.entries.values()
            if entry.finalized
            and (entry.claim.model_id, entry.claim.stage) == (claim.model_id, claim.stage)
            and entry.claim.checkpoint_cid == claim.parent_cid
        ]
        if not finalized:
            raise Undecidable(
                f"its parent {claim.parent_cid} is neither the stage's finalized checkpoint nor that of "
                "a claim the chain finalized"
            )
        return bytes.fromhex(max(finalized, key=lambda c: c.claim_id).checkpoint_digest)

    def _signers(self, spec: ModelSpec, claim: SubmittedClaim) -> dict[str, set[str] | None]:
        """Who may have sent this stage's messages: forward ones from the left neighbour's members
        (the driver for stage 0: any valid signature unless --driver names it; stage 0's inputs are
        the spec's batches anyway), backward ones from the right neighbour's members."""

        def members(stage: int) -> set[str]:
            return set(
                self.client.call(self.ledger.functions.membersOf(claim.model_id, stage), action="membersOf")
            )

        forward = members(claim.stage - 1) if claim.stage > 0 else (set(self.config.drivers) or None)
        backward = members(claim.stage + 1) if claim.stage + 1 < spec.num_stages else set()
        return {"forward": forward, "backward": backward}

    def _log_verdict(self, claim: SubmittedClaim, verdict: Verdict) -> None:
        result = {True: "valid", False: "INVALID", None: "undecided"}[verdict.valid]
        logger.info(
            "verdict claim=%d model=%d stage=%d round=%d result=%s step=%s steps_checked=%d "
            "reason=%s expected=%s actual=%s",
            claim.claim_id,
            claim.model_id,
            claim.stage,
            claim.round,
            result,
            "-" if verdict.step is None else verdict.step,
            verdict.steps_checked,
            verdict.reason or "-",
            verdict.expected or claim.checkpoint_digest,
            verdict.actual or claim.checkpoint_digest,
        )
