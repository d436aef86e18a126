"""Replay a stage's round from its parent state and trace, and name the first step that differs.

A verifier trusts nothing in the trace but the signatures: for every step it checks that the
recorded inputs are the messages their senders signed, recomputes the stage's outputs and
optimizer step with the same code the worker ran (StageTrainer, under the spec's compute profile),
and compares every digest the worker recorded. That the token ids are the data set's rows is
checked against the store by offchain/proofs/provenance.py."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from offchain.model.records import (
    NO_LEDGER,
    MessageHeader,
    MicroBatchRecord,
    SignedMessage,
    StepRecord,
    Trace,
    message_payload,
    sha256_hex,
)
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.proofs.signing import recover_signer_from_digest

Signers = Collection[str] | Mapping[str, Collection[str] | None] | None


@dataclass(frozen=True)
class ReplayReport:
    """first_divergent_step is None when every step matched; otherwise `reason` says what differed
    and expected (the trace's claim) / actual (the recomputation) are the two values. `state` is the
    replayed end-of-round state when every step matched (a verifier averages replicas' end states)."""

    steps_checked: int
    first_divergent_step: int | None = None
    reason: str | None = None
    expected: str | None = None
    actual: str | None = None
    state: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.first_divergent_step is None


class _Divergence(Exception):
    def __init__(self, reason: str, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.expected, self.actual = reason, expected, actual


def _check(what: str, expected: str | None, actual: str | None) -> None:
    if expected != actual:
        raise _Divergence(what, expected, actual)


class _Replayer:
    def __init__(
        self,
        spec: ModelSpec,
        trainer: StageTrainer,
        trace: Trace,
        signers: Signers,
        require_signatures: bool,
        deployment: tuple[int, str],
        recipient: str | None,
    ) -> None:
        self.spec, self.trainer, self.trace = spec, trainer, trace
        self.chain_id, self.ledger = deployment
        self.recipient = None if recipient is None else recipient.lower()
        by_direction = signers if isinstance(signers, Mapping) else {"forward": signers, "backward": signers}
        self.signers = {
            direction: None if allowed is None else {address.lower() for address in allowed}
            for direction, allowed in by_direction.items()
        }
        self.require_signatures = require_signatures
        self.messages = {(m.header.step, m.header.micro_batch, m.header.direction): m for m in trace.messages}

    def header(self, step: int, micro_batch: int, direction: str) -> MessageHeader:
        """The header the message into this stage must carry: the trace's model, stage and round, this
        replay's deployment (a message signed for another chain or ledger does not match)."""
        trace = self.trace
        return MessageHeader(
            trace.model_id, trace.stage, trace.round, step, micro_batch, direction, self.chain_id, self.ledger
        )

    def payload(self, mb: MicroBatchRecord, name: str) -> bytes:
        digest = mb.inputs.get(name)
        if digest is None or digest not in self.trace.payloads:
            raise _Divergence(f"input {name} of micro-batch {mb.index} missing from the trace", digest, None)
        return self.trace.payloads[digest]

    def verify_message(self, header: MessageHeader, parts: list[bytes]) -> None:
        where = f"{header.direction} message of micro-batch {header.micro_batch}"
        message: SignedMessage | None = self.messages.get((header.step, header.micro_batch, header.direction))
        if message is None:
            if self.require_signatures:
                raise _Divergence(f"{where} is not signed")
            return
        addressed = message.header.recipient
        if self.recipient is not None and addressed != self.recipient:
            raise _Divergence(
                f"{where} is addressed to {addressed}, not the claiming worker {self.recipient}",
                self.recipient,
                addressed,
            )
        header = replace(header, recipient=addressed)
        _check(f"{where}: header differs from the signed one", str(header), str(message.header))
        _check(
            f"{where}: payload differs from the signed one",
            message.payload_digest,
            sha256_hex(message_payload(*parts)),
        )
        try:
            signer = recover_signer_from_digest(header, message.payload_digest, message.signature)
        except ValueError as error:
            raise _Divergence(f"{where}: malformed signature ({error})") from None
        _check(f"{where}: signature is not the sender's", message.sender.lower(), signer.lower())
        allowed = self.signers.get(header.direction)
        if allowed is not None and signer.lower() not in allowed:
            raise _Divergence(f"{where}: signer {signer} is not an allowed sender", None, signer)

    def step(self, index: int, record: StepRecord) -> None:
        trainer, trace = self.trainer, self.trace
        _check("record round/step", f"{trace.round}/{index}", f"{record.round}/{record.step}")
        _check("state before the step", record.state_before, trainer.state_digest())
        indices = [mb.index for mb in record.micro_batches]
        if (
            not indices
            or indices != sorted(set(indices))
            or not 0 <= indices[0] <= indices[-1] < self.spec.micro_batches
        ):
            raise _Divergence(
                "micro-batch indices are not distinct, ascending and in range", None, str(indices)
            )
        for mb in record.micro_batches:
            header = self.header(index, mb.index, "forward")
            activation = b"" if trainer.is_first else self.payload(mb, "activation")
            tokens = self.payload(mb, "tokens")
            if trainer.is_last:
                targets = self.payload(mb, "targets")
                self.verify_message(header, [activation, tokens, targets])
                grad, loss = trainer.forward_backward(header, activation, tokens, targets)
                _check(f"loss of micro-batch {mb.index}", repr(mb.loss), repr(loss))
                if not trainer.is_first:
                    _check(f"grad sent by micro-batch {mb.index}", mb.outputs.get("grad"), sha256_hex(grad))
            else:
                self.verify_message(header, [activation, tokens])
                output = trainer.forward(header, activation, tokens)
                _check(
                    f"activation sent by micro-batch {mb.index}",
                    mb.outputs.get("activation"),
                    sha256_hex(output),
                )
        if not trainer.is_last:
            for mb in record.micro_batches:
                header = self.header(index, mb.index, "backward")
                grad = self.payload(mb, "grad")
                self.verify_message(header, [grad])
                sent = trainer.backward(header, grad)
                if sent is not None:
                    _check(f"grad sent by micro-batch {mb.index}", mb.outputs.get("grad"), sha256_hex(sent))
        applied = trainer.apply_step(trace.round, index, indices)
        _check("state after the step", record.state_after, applied.state_after)


def replay_round(
    spec: ModelSpec,
    stage: int,
    parent_state: bytes,
    trace: Trace,
    *,
    signers: Signers = None,
    require_signatures: bool = True,
    deployment: tuple[int, str] = (0, NO_LEDGER),
    recipient: str | None = None,
) -> ReplayReport:
    """Recompute `trace`'s round from `parent_state`. `signers`: addresses allowed to have sent
    this stage's input messages (the driver and the neighbour stages' members), or a mapping
    direction -> addresses (forward messages come from the left, backward ones from the right);
    None = any valid signature. `deployment` = (chain id, lowercase WorkLedger address) every
    message must be bound to ((0, NO_LEDGER) off-chain). `recipient`: the worker every message must
    be addressed to, the claim's worker for a verifier (a trace is its receiver's only); None
    accepts any (a worker replaying its own trace). Raises ValueError when the trace is for
    another stage, spec or compute profile (results differ bitwise between profiles, so replay runs
    only the spec's), and UserError when this machine cannot run the spec's profile (check
    `can_run(spec.profile)` first: a verifier never judges what it cannot replay)."""
    if trace.stage != stage:
        raise ValueError(f"trace is for stage {trace.stage}, not stage {stage}")
    if trace.spec_digest != spec.digest():
        raise ValueError("trace was recorded under another model spec")
    if trace.profile != spec.profile.digest():
        raise ValueError(
            f"trace was recorded under compute profile {trace.profile[:16]}, the spec fixes "
            f"{spec.profile.digest()[:16]}: results differ bitwise between profiles"
        )
    if sha256_hex(parent_state) != trace.parent_digest:
        return ReplayReport(0, 0, "parent state", trace.parent_digest, sha256_hex(parent_state))
    trainer = StageTrainer(spec, stage, state=parent_state, model_id=trace.model_id)
    replayer = _Replayer(spec, trainer, trace, signers, require_signatures, deployment, recipient)
    for index, record in enumerate(trace.records):
        try:
            replayer.step(index, record)
        except _Divergence as divergence:
            return ReplayReport(index, index, divergence.reason, divergence.expected, divergence.actual)
        except ValueError as error:
            return ReplayReport(index, index, f"recorded input refused: {error}")
    return ReplayReport(len(trace.records), state=trainer.state_bytes())
