"""Judging one claim: its trace replayed from its parent, then its checkpoint digest.

Pure computation (no chain, no network): the daemon fetches and decrypts, this decides. A claim is
valid when every step of its trace replays bit for bit from the parent state AND its checkpoint
digest is what those steps produce. With several replicas per stage, the committed checkpoint is
the average of the replicas' end-of-round states (offchain/swarm/server.py `_finish_round`,
`average_state_bytes`), so a digest that is not the claim's own end state is checked against the
averages of its group: the end states of every claim for the same (model, stage, round).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from offchain.model.records import NO_LEDGER, Trace
from offchain.model.spec import ModelSpec
from offchain.model.state import average_state_bytes
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import work_units

MAX_REPLICA_ORDERS = 24
"""Averaging orders tried for a replica group (float sums depend on the order the swarm used,
sorted peer ids, which the chain does not record): all of them up to 4 replicas."""


@dataclass(frozen=True)
class SubmittedClaim:
    """A claim as its ClaimSubmitted event states it."""

    claim_id: int
    model_id: int
    stage: int
    round: int
    worker: str
    parent_cid: str
    checkpoint_cid: str
    checkpoint_digest: str
    trace_root: str
    trace_cid: str
    work_units: int

    @classmethod
    def from_event(cls, args: Any) -> SubmittedClaim:
        return cls(
            int(args["claimId"]),
            int(args["modelId"]),
            int(args["stage"]),
            int(args["round"]),
            str(args["worker"]),
            args["parentCID"],
            args["checkpointCID"],
            bytes(args["checkpointDigest"]).hex(),
            bytes(args["traceRoot"]).hex(),
            args["traceCID"],
            int(args["workUnits"]),
        )

    @property
    def group(self) -> tuple[int, int, int]:
        """Claims that share (model, stage, round) are replicas averaged into one checkpoint."""
        return (self.model_id, self.stage, self.round)


@dataclass(frozen=True)
class Verdict:
    """valid is True (every step and the digest check out), False (refuted at `step`) or None
    (could not be decided: no challenge, no vote). expected = what the claim says, actual = what
    the replay computed."""

    claim_id: int
    valid: bool | None
    step: int | None = None
    reason: str | None = None
    expected: str | None = None
    actual: str | None = None
    steps_checked: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(**data)


@dataclass(frozen=True)
class Replayed:
    """A claim's trace replayed: `verdict` once decided; otherwise the trace replayed cleanly but the
    digest is not its own end state (`state`), and the replica group decides."""

    verdict: Verdict | None
    state: bytes | None = None


def _refuted(
    claim: SubmittedClaim, step: int, reason: str, expected: Any = None, actual: Any = None
) -> Replayed:
    expected, actual = (None if v is None else str(v) for v in (expected, actual))
    return Replayed(Verdict(claim.claim_id, False, step, reason, expected, actual, step))


def replay_claim(
    spec: ModelSpec,
    claim: SubmittedClaim,
    parent_state: bytes,
    trace: Trace,
    *,
    signers: Collection[str] | None,
    deployment: tuple[int, str] = (0, NO_LEDGER),
) -> Replayed:
    """Check the trace against the claim, replay it from `parent_state`, compare every step and the
    claimed digest. `signers`: who may have sent this stage's messages (None: any valid signature);
    `deployment`: the (chain id, ledger) every message must be signed for."""
    where = (trace.model_id, trace.stage, trace.round)
    if where != claim.group:
        return _refuted(claim, 0, "trace is for another model/stage/round", claim.group, where)
    steps = len(trace.records)
    if steps != spec.round_steps:
        return _refuted(claim, min(steps, spec.round_steps), "number of steps", spec.round_steps, steps)
    if work_units(trace) != claim.work_units:
        return _refuted(claim, 0, "work units", claim.work_units, work_units(trace))
    try:
        report = replay_round(spec, claim.stage, parent_state, trace, signers=signers, deployment=deployment)
    except ValueError as error:
        return _refuted(claim, 0, f"trace refused: {error}")
    if not report.ok:
        return _refuted(claim, report.first_divergent_step, report.reason, report.expected, report.actual)
    digest = hashlib.sha256(report.state).hexdigest()
    if digest == claim.checkpoint_digest:
        return Replayed(Verdict(claim.claim_id, True, steps_checked=steps), report.state)
    return Replayed(None, report.state)


def judge_group(
    spec: ModelSpec, claim: SubmittedClaim, states: Sequence[bytes], *, complete: bool
) -> Verdict:
    """Decide a claim whose digest is not its own end state, given the replayed end states of its
    group (itself included). Valid when the digest is the average of the group in some order the
    swarm may have used; refuted at the last step when the group is `complete` (every member of the
    stage claimed) and no average matches; undecided otherwise (a replica that never claimed may
    have been in the average: nothing to replay it from)."""
    last = spec.round_steps - 1
    for order in itertools.islice(itertools.permutations(states), MAX_REPLICA_ORDERS):
        if (
            len(order) > 1
            and hashlib.sha256(average_state_bytes(order)).hexdigest() == claim.checkpoint_digest
        ):
            return Verdict(claim.claim_id, True, steps_checked=spec.round_steps)
    own = hashlib.sha256(states[0]).hexdigest() if len(states) == 1 else f"average of {len(states)} replicas"
    reason = "claimed checkpoint is not the replayed end state" + (
        "" if len(states) == 1 else " nor its replicas' average"
    )
    if not complete:
        return Verdict(
            claim.claim_id,
            None,
            last,
            reason + " (some replicas have not claimed)",
            claim.checkpoint_digest,
            own,
            spec.round_steps,
        )
    return Verdict(claim.claim_id, False, last, reason, claim.checkpoint_digest, own, spec.round_steps)
