"""TEST TOOL: the ways a dishonest worker could lie about a round, for tests and the demo only.

`pm worker run --cheat MODE` passes what it is about to publish (the round's end state and trace)
through `apply_cheat`, and publishes and claims the result instead. Nothing here changes what the
worker sends to its swarm peers: honest training goes on, only the claim lies. Every mode is made
as consistent as a liar would make it (the trace's Merkle root is computed over the altered
records, signed messages are kept), so only a replay from the on-chain parent can catch it:

- skip-steps: the worker did the first half of the round's steps, then stopped computing but
  still claims every step (records from step k on say the state did not change) and the work
  units of all of them; it publishes the state after step k. Caught at step k ("state after").
- fake-digest: the trace is the honest one, but the claimed checkpoint is not the state the steps
  produce (one weight altered) and the last record claims that state. Caught at the last step.
- wrong-parent: the round was trained from a state other than the stage's finalized checkpoint
  (one weight altered) while the claim names the right parentCID; the trace is self-consistent
  from that wrong start. Caught at step 0 ("parent state").
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from offchain.model.records import MessageHeader, Trace
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer

CHEATS = ("skip-steps", "fake-digest", "wrong-parent")


def _perturbed(spec: ModelSpec, stage: int, state: bytes) -> bytes:
    """The same stage state with one weight moved by 1.0: still loadable, digest differs."""
    trainer = StageTrainer(spec, stage, state=state)
    with torch.no_grad():
        next(trainer.module.parameters()).view(-1)[0] += 1.0
    return trainer.state_bytes()


def _retrain(spec: ModelSpec, start: bytes, trace: Trace, steps: int) -> StageTrainer:
    """Run the first `steps` steps of `trace` again from `start`, feeding the recorded (and signed)
    input messages to a fresh trainer, which records its own trace of what it computed."""
    trainer = StageTrainer(spec, trace.stage, state=start, model_id=trace.model_id)
    messages = {(m.header.step, m.header.micro_batch, m.header.direction): m for m in trace.messages}

    def recorded(step: int, mb: int, direction: str) -> tuple[MessageHeader, dict]:
        """The header the input was signed under (deployment and recipient kept) and its signature."""
        message = messages.get((step, mb, direction))
        if message is None:
            return MessageHeader(trace.model_id, trace.stage, trace.round, step, mb, direction), {}
        return message.header, {"signature": message.signature, "sender": message.sender}

    for record in trace.records[:steps]:
        step = record.step
        for mb in record.micro_batches:
            inputs = {name: trace.payloads[digest] for name, digest in mb.inputs.items()}
            activation = inputs.get("activation", b"")
            header, forward = recorded(step, mb.index, "forward")
            if trainer.is_last:
                trainer.forward_backward(header, activation, inputs["tokens"], inputs["targets"], **forward)
            else:
                trainer.forward(header, activation, inputs["tokens"], **forward)
        if not trainer.is_last:
            for mb in record.micro_batches:
                header, backward = recorded(step, mb.index, "backward")
                trainer.backward(header, trace.payloads[mb.inputs["grad"]], **backward)
        trainer.apply_step(trace.round, step, [mb.index for mb in record.micro_batches])
    return trainer


def apply_cheat(
    mode: str, spec: ModelSpec, parent_state: bytes, state: bytes, trace: Trace
) -> tuple[bytes, Trace]:
    """TEST TOOL. (state, trace) a dishonest worker publishes and claims instead of the honest
    `state` (end of round) and `trace` (started from `parent_state`). Inputs are not modified."""
    if mode not in CHEATS:
        raise ValueError(f"unknown cheat {mode!r}; one of {', '.join(CHEATS)}")
    if not trace.records:
        raise ValueError("a round with no steps cannot be cheated on")
    if mode == "skip-steps":
        stopped = len(trace.records) // 2
        kept = _retrain(spec, parent_state, trace, stopped).state_bytes() if stopped else parent_state
        digest = hashlib.sha256(kept).hexdigest()
        idle = [
            dataclasses.replace(r, state_before=digest, state_after=digest) for r in trace.records[stopped:]
        ]
        return kept, dataclasses.replace(trace, records=[*trace.records[:stopped], *idle])
    if mode == "fake-digest":
        fake = _perturbed(spec, trace.stage, state)
        last = dataclasses.replace(trace.records[-1], state_after=hashlib.sha256(fake).hexdigest())
        return fake, dataclasses.replace(trace, records=[*trace.records[:-1], last])
    trainer = _retrain(spec, _perturbed(spec, trace.stage, parent_state), trace, len(trace.records))
    return trainer.state_bytes(), trainer.trace
