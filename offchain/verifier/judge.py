"""Judging a claim: its manifest, then each round to check fetched under the stage's limits and
replayed from its parent, everything compared with what the chain holds.

A round's parent is the claim's parent for its first round (the spec's seed, the stage's finalized
checkpoint, or the checkpoint of the lane's previous claim, pending or not), else the previous
round's checkpoint in the manifest; the digest it must have always comes from the chain (the
previous claim's, checkpointOf's, a finalized claim's) or from the manifest the chain's roundsRoot
commits to, never from what some claim merely names.

Whatever the content, `claim()` returns a verdict or None (look again later), and never raises for
it: see content.py for how wrong, withheld and unreachable content are told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

from offchain.chain.client import ContractRevert
from offchain.chain.protocol import Protocol
from offchain.chain.retry import is_transient
from offchain.chain.structs import call_struct
from offchain.crash import crash_point
from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.data.shipped import open_spec_dataset
from offchain.model.profile import can_run
from offchain.model.records import Trace
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.proofs.manifest import ClaimManifest
from offchain.storage.cids import bytes32_to_cid
from offchain.storage.crypto import StageKey
from offchain.storage.errors import ContentUnavailable, StorageError
from offchain.storage.store import Store
from offchain.swarm.keyshare import StageKeyUnavailable
from offchain.verifier.check import Replayed, RoundClaim, SubmittedClaim, Verdict, judge_group, replay_claim
from offchain.verifier.content import (
    Refused,
    key_id_in,
    open_checkpoint,
    open_manifest,
    open_spec,
    open_trace,
    stage_limits,
)
from offchain.verifier.journal import MAX_REPLAYS, Entry, Journal
from offchain.verifier.limits import StageLimits

logger = logging.getLogger(__name__)

KeySource = Callable[[ModelSpec, int, int, bytes], Awaitable[StageKey]]
"""(spec, model id, stage, key id) -> that key of the stage (a validator is granted its own stage's
keys only; a ciphertext's header names the key it is under)."""


class Undecidable(Exception):
    """This validator cannot judge the claim, and nothing in the claim's own content is at fault (its
    parent checkpoint is unusable, its replay never finished): no challenge, no vote."""


@contextlib.contextmanager
def refuting(round_: int) -> Iterator[None]:
    """A refusal raised inside refutes `round_` (unless it already names a round)."""
    try:
        yield
    except Refused as refusal:
        if refusal.round is None:
            refusal.round = round_
        raise


class Judge:
    """Fetches, checks and replays claims of the stages a validator watches; caches specs, manifests
    and replays (dropped with `forget` once a claim is settled)."""

    def __init__(
        self, protocol: Protocol, store: Store, keys: KeySource, journal: Journal, drivers: tuple[str, ...]
    ) -> None:
        self.protocol, self.store, self.keys, self.journal, self.drivers = (
            protocol,
            store,
            keys,
            journal,
            drivers,
        )
        self.client, self.ledger = protocol.client, protocol.ledger
        self.stages: dict[tuple[int, int], tuple[ModelSpec, StageLimits] | str] = {}
        """(model, stage) -> its spec and limits, or why its claims are refused."""
        self.manifests: dict[int, ClaimManifest] = {}
        self.datasets: dict[str, Dataset] = {}
        """manifest CID -> the data set token provenance is checked against (fetched once)."""
        self.replays: dict[tuple[int, int], Replayed] = {}
        """(claim id, round) -> that round replayed (its end state kept only where a replica group may
        need it: a stage of several members, or a digest that is not its own end state)."""
        self.waiting: set[int] = set()
        """Claims whose content or stage key is not there yet (logged once each)."""

    def forget(self, claim_id: int) -> None:
        self.manifests.pop(claim_id, None)
        self.waiting.discard(claim_id)
        for key in [key for key in self.replays if key[0] == claim_id]:
            del self.replays[key]

    # -- verdicts ---------------------------------------------------------------------------------

    async def claim(
        self, entry: Entry, rounds: Sequence[int], *, patient: bool, group_patient: bool
    ) -> Verdict | None:
        """The verdict on `rounds` of the claim: the first refuted one refutes it; valid when all are.
        None while content, key or replicas may still come (`patient`, `group_patient`)."""
        return await self._guarded(entry, self._rounds(entry, rounds, group_patient), patient)

    async def _guarded(self, entry: Entry, work: Awaitable[Verdict | None], patient: bool) -> Verdict | None:
        claim = entry.claim
        try:
            return await work
        except Refused as refusal:
            round_ = claim.first_round if refusal.round is None else refusal.round
            return Verdict(claim.claim_id, False, round_, 0, str(refusal))
        except (StageKeyUnavailable, ContentUnavailable) as error:
            if patient:
                if claim.claim_id not in self.waiting:
                    logger.warning("claim %d: %s; waiting for the grace period", claim.claim_id, error)
                    self.waiting.add(claim.claim_id)
                return None
            reason = f"withheld past the grace period: {error}"
            return Verdict(claim.claim_id, False, reason=reason, withheld=True)
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

    async def _rounds(self, entry: Entry, rounds: Sequence[int], group_patient: bool) -> Verdict | None:
        claim = entry.claim
        spec, limits = self.stage(claim.model_id, claim.stage)
        manifest = self.manifest(claim)
        checked = 0
        for round_ in rounds:
            replayed = await self._replay(entry, manifest, round_, spec, limits)
            verdict = replayed.verdict
            if verdict is None:
                verdict = await self._group(entry, manifest, round_, replayed, spec, group_patient)
            if verdict is None or verdict.valid is not True:
                return verdict
            checked += verdict.steps_checked
        return Verdict(claim.claim_id, True, steps_checked=checked)

    # -- content ----------------------------------------------------------------------------------

    def stage(self, model_id: int, stage: int) -> tuple[ModelSpec, StageLimits]:
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

    def _dataset(self, spec: ModelSpec) -> Dataset:
        """The spec's prepared data set (fetched once per manifest), checked against the spec."""
        if spec.manifest_cid not in self.datasets:
            self.datasets[spec.manifest_cid] = open_spec_dataset(
                self.store, spec.tokenizer_cid, spec.manifest_cid, spec.config.vocab_size
            )
        return self.datasets[spec.manifest_cid]

    def manifest(self, claim: SubmittedClaim) -> ClaimManifest:
        if claim.claim_id not in self.manifests:
            self.manifests[claim.claim_id] = open_manifest(self.store, claim)
        return self.manifests[claim.claim_id]

    async def _key(
        self, claim: SubmittedClaim, spec: ModelSpec, cid: str, max_size: int, what: str
    ) -> StageKey:
        """The key of the claim's stage that the ciphertext at `cid` names (members rotate keys)."""
        key_id = key_id_in(self.store, cid, max_size, what)
        return await self.keys(spec, claim.model_id, claim.stage, key_id)

    async def _checkpoint(
        self, claim: SubmittedClaim, spec: ModelSpec, limits: StageLimits, cid: str, digest: bytes
    ) -> bytes:
        key = await self._key(claim, spec, cid, limits.checkpoint_bytes, f"checkpoint {cid}")
        return open_checkpoint(self.store, key, cid, digest, limits)

    async def _trace(
        self, claim: SubmittedClaim, spec: ModelSpec, limits: StageLimits, cid: str, root: bytes
    ) -> Trace:
        key = await self._key(claim, spec, cid, limits.encrypted_trace_bytes, f"trace {cid}")
        return open_trace(self.store, key, cid, root, limits)

    async def _replay(
        self,
        entry: Entry,
        manifest: ClaimManifest,
        round_: int,
        spec: ModelSpec,
        limits: StageLimits,
    ) -> Replayed:
        """Fetch, decode and check one round under the stage's limits, then replay it (in a thread:
        the P2P node keeps serving meanwhile). Refused: its content refutes the claim at that round."""
        claim = entry.claim
        if (claim.claim_id, round_) in self.replays:
            return self.replays[claim.claim_id, round_]
        record = manifest.record(round_)
        with refuting(round_):
            trace = await self._trace(claim, spec, limits, record.trace_cid, record.trace_root)
            await self._checkpoint(claim, spec, limits, record.checkpoint_cid, record.checkpoint_digest)
        parent = await self._parent(claim, manifest, round_, spec, limits)
        runnable, why = can_run(spec.profile)
        if not runnable:  # never challenge what this machine cannot replay bit for bit
            raise Undecidable(f"this validator cannot run the spec's compute profile: {why}")
        try:
            dataset = self._dataset(spec)
        except (DatasetError, StorageError) as error:  # the spec's data, not the worker's: no judgement
            return Replayed(
                Verdict(claim.claim_id, None, round_, reason=f"cannot read the data set: {error}")
            )
        if entry.replays >= MAX_REPLAYS:
            raise Undecidable(f"its replay started {entry.replays} times and never finished")
        start = claim.parent_cid or "the seed state"
        logger.info(
            "claim %d (stage %d round %d): replaying %d steps from %s",
            claim.claim_id,
            claim.stage,
            round_,
            len(trace.records),
            f"round {round_ - 1}'s checkpoint" if round_ > claim.first_round else start,
        )
        entry.replays += 1
        self.journal.save()
        crash_point("mid-replay")
        target = RoundClaim.of(claim, record)
        replayed = await asyncio.to_thread(
            replay_claim,
            spec,
            target,
            parent,
            trace,
            signers=self._signers(spec, claim),
            deployment=(self.client.chain_id, self.ledger.address.lower()),
            dataset=dataset,
        )
        entry.replays = 0
        self.journal.save()
        if replayed.verdict is not None and len(self._members(claim.model_id, claim.stage)) < 2:
            replayed = Replayed(replayed.verdict)  # no replica will ever need its end state: free it
        self.replays[claim.claim_id, round_] = replayed
        return replayed

    async def _parent(
        self,
        claim: SubmittedClaim,
        manifest: ClaimManifest,
        round_: int,
        spec: ModelSpec,
        limits: StageLimits,
    ) -> bytes:
        """The state `round_` must start from: the previous round's checkpoint in the manifest (the
        claim's own content), or for the first round the claim's parent, checked against the digest
        the chain holds for it (the spec's seeded init when there is none)."""
        if round_ > claim.first_round:
            before = manifest.record(round_ - 1)
            with refuting(round_ - 1):
                return await self._checkpoint(
                    claim, spec, limits, before.checkpoint_cid, before.checkpoint_digest
                )
        if claim.parent_cid is None:
            return StageTrainer(spec, claim.stage, model_id=claim.model_id).state_bytes()
        digest = self._parent_digest(claim)
        try:
            return await self._checkpoint(claim, spec, limits, claim.parent_cid, digest)
        except Refused as refusal:
            raise Undecidable(f"its parent checkpoint is unusable: {refusal}") from None

    def _parent_digest(self, claim: SubmittedClaim) -> bytes:
        """What the chain says the claim's parent checkpoint digest is: the previous claim's of its lane
        (its ClaimSubmitted event), else the stage's finalized checkpoint's when it still is the
        parent, else that of the claim whose finalization made it the stage's."""
        if claim.previous_claim_id:
            previous = self.journal.entries.get(claim.previous_claim_id)
            if previous is not None:
                return bytes.fromhex(previous.claim.checkpoint_digest)
            try:
                struct = self.ledger.functions.getClaim(claim.previous_claim_id)
                return bytes(call_struct(self.client, struct, "getClaim")["checkpointDigest"])
            except ContractRevert as revert:
                raise Undecidable(f"its previous claim {claim.previous_claim_id}: {revert}") from None
        checkpoint = self.protocol.registry.functions.checkpointOf(claim.model_id, claim.stage)
        cid, digest, _ = self.client.call(checkpoint, action="checkpointOf")
        if bytes(cid) != bytes(32) and bytes32_to_cid(bytes(cid)) == claim.parent_cid:
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

    # -- replicas ---------------------------------------------------------------------------------

    async def _group(
        self,
        entry: Entry,
        manifest: ClaimManifest,
        round_: int,
        replayed: Replayed,
        spec: ModelSpec,
        patient: bool,
    ) -> Verdict | None:
        """A round whose digest is not its own end state: judged with the other claims of its stage
        that cover the same round (replicas average their end states into one checkpoint)."""
        claim = entry.claim
        states = [replayed.state]
        for other in sorted(self.journal.entries.values(), key=lambda e: e.claim.claim_id):
            mate = other.claim
            if other is entry or (mate.model_id, mate.stage) != (claim.model_id, claim.stage):
                continue
            if round_ in mate.rounds:
                state = await self._member_state(other, round_)
                if state is not None:
                    states.append(state)
        members = self._members(claim.model_id, claim.stage)
        target = RoundClaim.of(claim, manifest.record(round_))
        verdict = judge_group(spec, target, states, complete=len(states) >= len(members))
        return None if verdict.valid is None and patient else verdict

    async def _member_state(self, member: Entry, round_: int) -> bytes | None:
        """A replica's replayed end state of `round_`, or None when it has none to give."""
        claim = member.claim
        try:
            spec, limits = self.stage(claim.model_id, claim.stage)
            replayed = await self._replay(member, self.manifest(claim), round_, spec, limits)
        except (Refused, Undecidable, StageKeyUnavailable, StorageError):
            return None
        return replayed.state

    def _signers(self, spec: ModelSpec, claim: SubmittedClaim) -> dict[str, set[str] | None]:
        """Who may have sent this stage's messages: forward ones from the left neighbour's members
        (the driver for stage 0: any valid signature unless --driver names it; stage 0's inputs are
        the spec's batches anyway), backward ones from the right neighbour's members."""

        stage, model_id = claim.stage, claim.model_id
        forward = set(self._members(model_id, stage - 1)) if stage > 0 else (set(self.drivers) or None)
        backward = set(self._members(model_id, stage + 1)) if stage + 1 < spec.num_stages else set()
        return {"forward": forward, "backward": backward}

    def _members(self, model_id: int, stage: int) -> list[str]:
        return self.client.call(self.ledger.functions.membersOf(model_id, stage), action="membersOf")
