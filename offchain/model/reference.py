"""Single-process reference: every stage of a spec in one process, exchanging the same bytes the
swarm would exchange, in the same order. The swarm's correctness test compares against it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from offchain.data.dataset import Dataset
from offchain.model.data import micro_batch
from offchain.model.records import NO_LEDGER, NOBODY, MessageHeader, Trace, message_payload
from offchain.model.spec import ModelSpec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer


@dataclass
class ReferenceResult:
    """losses[i] = mean micro-batch loss of the i-th step overall (round-major); states[s] and
    state_digests[s] = stage s's state after the last round; traces[s] = its last round's trace."""

    losses: list[float] = field(default_factory=list)
    states: list[bytes] = field(default_factory=list)
    state_digests: list[str] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list)
    boundary_bytes: int = 0


Signer = Callable[[MessageHeader, bytes], tuple[bytes, str]]
"""sign(header, message_payload bytes) -> (signature, sender address), for the message's sender."""


def _signed(sign: Signer | None, header: MessageHeader, *parts: bytes) -> dict:
    if sign is None:
        return {}
    signature, sender = sign(header, message_payload(*parts))
    return {"signature": signature, "sender": sender}


def run_step(
    trainers: list[StageTrainer],
    round: int,
    step: int,
    model_id: int = 0,
    sign: Signer | None = None,
    dataset: Dataset | None = None,
    deployment: tuple[int, str] = (0, NO_LEDGER),
    recipients: Sequence[str] | None = None,
) -> tuple[float, int]:
    """One optimizer step through every stage: per micro-batch, forward left to right, loss, backward
    right to left; then apply_step on every stage. Returns (mean loss, bytes that crossed stage
    boundaries: activations + gradients, token ids not counted). With `sign`, every message is
    signed as its sender would and filed in the receiver's trace; every header names `deployment`
    (chain id, lowercase WorkLedger address), as an on-chain swarm's do, and the worker of the
    receiving stage (`recipients[stage]`, NOBODY without), so a verifier of that deployment replays
    the trace as that worker's."""
    spec = trainers[0].spec
    last = len(trainers) - 1
    to = [address.lower() for address in recipients] if recipients is not None else [NOBODY] * len(trainers)
    losses = []
    crossed = 0
    for mb in range(spec.micro_batches):
        tokens, targets, source = micro_batch(spec, dataset, round, step, mb)
        token_bytes, target_bytes = encode_tokens(tokens, spec), encode_tokens(targets, spec)
        activation = b""
        for stage in range(last):
            header = MessageHeader(model_id, stage, round, step, mb, "forward", *deployment, to[stage])
            signed = _signed(sign, header, activation, token_bytes)
            activation = trainers[stage].forward(header, activation, token_bytes, **signed, source=source)
            crossed += len(activation)
        header = MessageHeader(model_id, last, round, step, mb, "forward", *deployment, to[last])
        signed = _signed(sign, header, activation, token_bytes, target_bytes)
        grad, loss = trainers[last].forward_backward(
            header, activation, token_bytes, target_bytes, **signed, source=source
        )
        losses.append(loss)
        for stage in range(last - 1, -1, -1):
            crossed += len(grad)
            header = MessageHeader(model_id, stage, round, step, mb, "backward", *deployment, to[stage])
            grad = trainers[stage].backward(header, grad, **_signed(sign, header, grad))
    for trainer in trainers:
        trainer.apply_step(round, step)
    return sum(losses) / len(losses), crossed


def train_single_process(
    spec: ModelSpec,
    rounds: int,
    *,
    first_round: int = 0,
    states: list[bytes] | None = None,
    model_id: int = 0,
    sign: Signer | None = None,
    dataset: Dataset | None = None,
    deployment: tuple[int, str] = (0, NO_LEDGER),
    recipients: Sequence[str] | None = None,
) -> ReferenceResult:
    """Train `rounds` rounds of `spec` from the seeded init (or from `states`, one per stage), on
    `dataset` (None: the shipped data set the spec names); the messages are bound to `deployment`
    and addressed to `recipients` (one worker per stage, run_step)."""
    trainers = [
        StageTrainer(spec, stage, state=states[stage] if states else None, model_id=model_id)
        for stage in range(spec.num_stages)
    ]
    result = ReferenceResult()
    for round in range(first_round, first_round + rounds):
        for step in range(spec.round_steps):
            loss, crossed = run_step(trainers, round, step, model_id, sign, dataset, deployment, recipients)
            result.losses.append(loss)
            result.boundary_bytes += crossed
    result.states = [trainer.state_bytes() for trainer in trainers]
    result.state_digests = [trainer.state_digest() for trainer in trainers]
    result.traces = [trainer.trace for trainer in trainers]
    return result
