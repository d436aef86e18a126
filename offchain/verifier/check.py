"""Judging one round of a claim: its trace replayed from its parent, then its checkpoint digest.

Pure computation (no chain, no network): the judge fetches and decrypts, this decides. A round is
valid when every step of its trace replays bit for bit from the parent state AND its checkpoint
digest is what those steps produce. With several replicas per stage, the committed checkpoint is
the average of the replicas' end-of-round states (offchain/swarm/server.py `_finish_round`,
`average_state_bytes`), so a digest that is not the round's own end state is checked against the
averages of its group: the end states of every claimed round for the same (model, stage, round).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from offchain.chain.status import cid_of
from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.model.checkpoint import average_state_bytes
from offchain.model.data import spec_dataset
from offchain.model.records import NO_LEDGER, Trace
from offchain.model.spec import ModelSpec
from offchain.proofs.manifest import RoundRecord
from offchain.proofs.provenance import Batching, check_data
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import work_units
from offchain.storage.cids import bytes32_to_cid
from offchain.storage.errors import StorageError

MAX_REPLICA_ORDERS = 24
"""Averaging orders tried for a replica group (float sums depend on the order the swarm used,
sorted peer ids, which the chain does not record): all of them up to 4 replicas."""


@dataclass(frozen=True)
class SubmittedClaim:
    """A claim as its ClaimSubmitted event states it (CIDs as text; parent None = the spec's seed)."""

    claim_id: int
    model_id: int
    stage: int
    first_round: int
    last_round: int
    worker: str
    previous_claim_id: int
    parent_cid: str | None
    checkpoint_cid: str
    checkpoint_digest: str
    rounds_root: str
    manifest_cid: str
    work_units: int

    @classmethod
    def from_event(cls, args: Any) -> SubmittedClaim:
        return cls(
            int(args["claimId"]),
            int(args["modelId"]),
            int(args["stage"]),
            int(args["firstRound"]),
            int(args["lastRound"]),
            str(args["worker"]),
            int(args["previousClaimId"]),
            cid_of(args["parentCID"]),
            bytes32_to_cid(bytes(args["checkpointCID"])),
            bytes(args["checkpointDigest"]).hex(),
            bytes(args["roundsRoot"]).hex(),
            bytes32_to_cid(bytes(args["manifestCID"])),
            int(args["workUnits"]),
        )

    @property
    def lane(self) -> int:
        """claimId = laneId << 64 | seq: claims of one lane sort in lane order."""
        return self.claim_id >> 64

    @property
    def rounds(self) -> range:
        return range(self.first_round, self.last_round + 1)


@dataclass(frozen=True)
class RoundClaim:
    """One round of a claim, as its manifest records it: what a replay is compared with."""

    claim_id: int
    model_id: int
    stage: int
    round: int
    checkpoint_digest: str
    work_units: int
    worker: str
    """The claiming worker: every message of the round's trace must be addressed to it (audit F6)."""
    profile: str | None = None  # the compute profile the manifest says the round ran under

    @classmethod
    def of(cls, claim: SubmittedClaim, record: RoundRecord) -> RoundClaim:
        digest = record.checkpoint_digest.hex()
        return cls(
            claim.claim_id,
            claim.model_id,
            claim.stage,
            record.round,
            digest,
            record.work_units,
            claim.worker,
            record.profile,
        )

    @property
    def group(self) -> tuple[int, int, int]:
        """Rounds that share (model, stage, round) are replicas averaged into one checkpoint."""
        return (self.model_id, self.stage, self.round)


@dataclass(frozen=True)
class Verdict:
    """valid is True (every replayed round checks out), False (refuted at `round`, `step`) or None
    (could not be decided: no challenge, no vote). withheld: refuted because its content (or its
    stage key) could not be had past the grace period, an Unavailable challenge rather than a
    divergence. expected = what the claim says, actual = what the replay computed."""

    claim_id: int
    valid: bool | None
    round: int | None = None
    step: int | None = None
    reason: str | None = None
    expected: str | None = None
    actual: str | None = None
    steps_checked: int = 0
    withheld: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(**data)


@dataclass(frozen=True)
class Replayed:
    """A round's trace replayed: `verdict` once decided; otherwise the trace replayed cleanly but the
    digest is not its own end state (`state`), and the replica group decides."""

    verdict: Verdict | None
    state: bytes | None = None


def _refuted(
    target: RoundClaim, step: int, reason: str, expected: Any = None, actual: Any = None
) -> Replayed:
    expected, actual = (None if v is None else str(v) for v in (expected, actual))
    return Replayed(Verdict(target.claim_id, False, target.round, step, reason, expected, actual, step))


def replay_claim(
    spec: ModelSpec,
    target: RoundClaim,
    parent_state: bytes,
    trace: Trace,
    *,
    signers: Collection[str] | None,
    deployment: tuple[int, str] = (0, NO_LEDGER),
    dataset: Dataset | None = None,
) -> Replayed:
    """Check the trace against the round's record and its token ids against the spec's data set
    (`dataset`, opened from the spec's `manifest_cid`; None: the shipped one it names), replay it
    from `parent_state`, compare every step and the recorded digest. `signers`: who may have sent
    this stage's messages (None: any valid signature); `deployment`: the (chain id, ledger) every
    message must be signed for; every message must be addressed to `target.worker`, so a copy of
    another member's claim (its trace, checkpoint, manifest) is refuted at its first message. The
    trace's round is the swarm round it was trained in: never below the round's place in the
    stage's lineage (after a rollback it is above it), see
    offchain/proofs/manifest.py. A data set that cannot be read leaves the round undecided: it is
    the spec's data, not the worker's."""
    if (trace.model_id, trace.stage) != (target.model_id, target.stage) or trace.round < target.round:
        where = (trace.model_id, trace.stage, trace.round)
        reason = "trace is for another model/stage or an earlier round"
        return _refuted(target, 0, reason, target.group, where)
    steps = len(trace.records)
    if steps != spec.round_steps:
        return _refuted(target, min(steps, spec.round_steps), "number of steps", spec.round_steps, steps)
    if work_units(trace) != target.work_units:
        return _refuted(target, 0, "work units", target.work_units, work_units(trace))
    if target.profile is not None and target.profile != trace.profile:
        return _refuted(target, 0, "compute profile", target.profile, trace.profile)
    batching = Batching.of(spec)
    try:
        data = spec_dataset(spec, dataset)
        mismatch = check_data(trace, data, batching, targets=target.stage == spec.num_stages - 1)
    except (DatasetError, StorageError) as error:  # the data set's fault, not the worker's
        return Replayed(
            Verdict(target.claim_id, None, target.round, reason=f"cannot read the data set: {error}")
        )
    if mismatch is not None:
        return _refuted(target, mismatch.step, mismatch.reason, mismatch.expected, mismatch.actual)
    try:
        report = replay_round(
            spec,
            target.stage,
            parent_state,
            trace,
            signers=signers,
            deployment=deployment,
            recipient=target.worker,
        )
    except ValueError as error:
        return _refuted(target, 0, f"trace refused: {error}")
    if not report.ok:
        return _refuted(target, report.first_divergent_step, report.reason, report.expected, report.actual)
    if hashlib.sha256(report.state).hexdigest() == target.checkpoint_digest:
        return Replayed(Verdict(target.claim_id, True, target.round, steps_checked=steps), report.state)
    return Replayed(None, report.state)


def judge_group(spec: ModelSpec, target: RoundClaim, states: Sequence[bytes], *, complete: bool) -> Verdict:
    """Decide a round whose digest is not its own end state, given the replayed end states of its
    group (itself first). Valid when the digest is the average of the group in some order the
    swarm may have used; refuted at the last step when the group is `complete` (every member of the
    stage claimed the round) and no average matches; undecided otherwise (a replica that never
    claimed may have been in the average: nothing to replay it from)."""
    last = spec.round_steps - 1
    for order in itertools.islice(itertools.permutations(states), MAX_REPLICA_ORDERS):
        if (
            len(order) > 1
            and hashlib.sha256(average_state_bytes(order)).hexdigest() == target.checkpoint_digest
        ):
            return Verdict(target.claim_id, True, target.round, steps_checked=spec.round_steps)
    own = hashlib.sha256(states[0]).hexdigest() if len(states) == 1 else f"average of {len(states)} replicas"
    reason = "claimed checkpoint is not the replayed end state" + (
        "" if len(states) == 1 else " nor its replicas' average"
    )
    if not complete:
        reason += " (some replicas have not claimed)"
    return Verdict(
        target.claim_id,
        False if complete else None,
        target.round,
        last,
        reason,
        target.checkpoint_digest,
        own,
        spec.round_steps,
    )
