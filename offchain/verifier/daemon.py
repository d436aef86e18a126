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
from offchain.chain.models import fetch_spec
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.proofs.rounds import CheckpointMismatch, fetch_checkpoint, fetch_trace
from offchain.storage.crypto import StageKey, decrypt_checkpoint
from offchain.storage.errors import DecryptionError, InvalidCID, StorageError
from offchain.storage.store import Store
from offchain.swarm.keyshare import StageKeyUnavailable
from offchain.verifier.check import Replayed, SubmittedClaim, Verdict, judge_group, replay_claim
from offchain.verifier.journal import Entry, Journal

logger = logging.getLogger(__name__)

EVENTS = ["ClaimSubmitted", "ClaimChallenged", "ClaimResolved", "ClaimFinalized", "ClaimRejected"]
KeySource = Callable[[ModelSpec, int, int], Awaitable[StageKey]]
"""(spec, model id, stage) -> that stage's key (a validator is granted it by a stage member)."""


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
        self.specs: dict[int, ModelSpec] = {}
        self.end_states: dict[int, bytes] = {}

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
            self.journal.digests[claim.checkpoint_cid] = claim.checkpoint_digest
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
        else:
            entry.done = True
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
            entry.done = True
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
        still to claim) while the deadline leaves time."""
        claim = entry.claim
        patient = now < chain.deadline - self.challenge_window // 3
        try:
            replayed = await self._replay(claim)
        except StageKeyUnavailable as error:
            logger.warning("claim %d: %s", claim.claim_id, error)
            return None if patient else Verdict(claim.claim_id, None, reason=f"no stage key: {error}")
        except StorageError as error:
            if patient:
                return None
            return Verdict(claim.claim_id, False, 0, f"content unavailable: {error}")
        if replayed.verdict is not None:
            return replayed.verdict
        group = self.journal.group(claim)
        states = []
        for member in group:
            if member.claim.claim_id not in self.end_states:
                try:
                    await self._replay(member.claim)
                except StorageError:
                    continue
            if member.claim.claim_id in self.end_states:
                states.append(self.end_states[member.claim.claim_id])
        members = self.client.call(
            self.ledger.functions.membersOf(claim.model_id, claim.stage), action="membersOf"
        )
        verdict = judge_group(self._spec(claim.model_id), claim, states, complete=len(states) >= len(members))
        return None if verdict.valid is None and patient else verdict

    async def _replay(self, claim: SubmittedClaim) -> Replayed:
        """Fetch, decrypt and replay one claim (in a thread: the P2P node keeps serving meanwhile)."""
        spec = self._spec(claim.model_id)
        key = await self.keys(spec, claim.model_id, claim.stage)
        try:
            trace = fetch_trace(self.store, key, claim.trace_cid, bytes.fromhex(claim.trace_root))
            parent = self._parent(spec, claim, key)
            fetch_checkpoint(self.store, key, claim.checkpoint_cid, bytes.fromhex(claim.checkpoint_digest))
        except (CheckpointMismatch, DecryptionError, InvalidCID) as error:
            return Replayed(Verdict(claim.claim_id, False, 0, f"published content refused: {error}"))
        logger.info(
            "claim %d (stage %d round %d): replaying %d steps from parent %s",
            claim.claim_id,
            claim.stage,
            claim.round,
            len(trace.records),
            claim.parent_cid or "(seed state)",
        )
        replayed = await asyncio.to_thread(
            replay_claim,
            spec,
            claim,
            parent,
            trace,
            signers=self._signers(spec, claim),
            deployment=(self.protocol.client.chain_id, self.protocol.ledger.address.lower()),
        )
        if replayed.state is not None:
            self.end_states[claim.claim_id] = replayed.state
        return replayed

    def _spec(self, model_id: int) -> ModelSpec:
        if model_id not in self.specs:
            self.specs[model_id] = fetch_spec(self.store, self.protocol.model(model_id).spec_cid)
        return self.specs[model_id]

    def _parent(self, spec: ModelSpec, claim: SubmittedClaim, key: StageKey) -> bytes:
        """The state the round must start from: the spec's seeded init for a stage's first claim, else
        the checkpoint at parentCID (checked against its digest when this verifier saw it claimed)."""
        if not claim.parent_cid:
            return StageTrainer(spec, claim.stage, model_id=claim.model_id).state_bytes()
        digest = self.journal.digests.get(claim.parent_cid)
        if digest is None:
            return decrypt_checkpoint(key, self.store.get(claim.parent_cid))
        return fetch_checkpoint(self.store, key, claim.parent_cid, bytes.fromhex(digest))

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
