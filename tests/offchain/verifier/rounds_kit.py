"""Real rounds for verifier tests: signed single-process rounds, a round with two replicas of the
middle stage (each trains half of the micro-batches, their end states are averaged), and the
round a worker would claim for a published state and trace; traces edited as a liar would."""

from __future__ import annotations

import hashlib
import json
import struct

from eth_account import Account
from eth_utils import keccak

from offchain.model.checkpoint import average_state_bytes
from offchain.model.data import micro_batch
from offchain.model.records import MessageHeader, Trace, message_payload
from offchain.model.spec import ModelSpec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer
from offchain.proofs.rounds import work_units
from offchain.proofs.signing import sign_message
from offchain.verifier.check import RoundClaim


def throwaway(name: str):
    """A test identity derived from a public string: never funded anywhere."""
    return Account.from_key(keccak(text=f"pm-verifier-test-{name}"))


def make_signer(driver, stage_accounts):
    """sign(header, payload) as the message's real sender: the driver into stage 0, the left
    neighbour for activations, the right neighbour for gradients."""

    def sign(header: MessageHeader, payload: bytes) -> tuple[bytes, str]:
        if header.direction == "forward":
            account = driver if header.stage == 0 else stage_accounts[header.stage - 1]
        else:
            account = stage_accounts[header.stage + 1]
        return sign_message(account.key, header, payload), account.address

    return sign


def claim_for(state: bytes, trace: Trace, worker: str, *, claim_id: int = 1) -> RoundClaim:
    """The round `worker` would claim for `state` after `trace` (its lineage round = the trace's)."""
    digest = hashlib.sha256(state).hexdigest()
    return RoundClaim(claim_id, trace.model_id, trace.stage, trace.round, digest, work_units(trace), worker)


def replica_round(
    spec: ModelSpec, sign, workers: list[str], round_: int = 0
) -> tuple[list[bytes], list[StageTrainer], bytes]:
    """One round of a 3-stage spec where stage 1 has two replicas: micro-batch mb goes to replica
    mb % 2. `workers`: the addresses of stage 0, the two replicas and stage 2 (the recipients of
    their messages). Returns (parent states, the two stage-1 replicas, their average in the given
    order)."""
    first_to, *middle_to, last_to = (address.lower() for address in workers)
    first, last = StageTrainer(spec, 0), StageTrainer(spec, 2)
    replicas = [StageTrainer(spec, 1), StageTrainer(spec, 1)]
    parents = [first.state_bytes(), replicas[0].state_bytes(), last.state_bytes()]

    def signed(header: MessageHeader, *parts: bytes) -> dict:
        signature, sender = sign(header, message_payload(*parts))
        return {"signature": signature, "sender": sender}

    for step in range(spec.round_steps):
        for mb in range(spec.micro_batches):
            tokens, targets, source = micro_batch(spec, None, round_, step, mb)
            tokens, targets = encode_tokens(tokens, spec), encode_tokens(targets, spec)
            middle = replicas[mb % 2]
            header = MessageHeader(0, 0, round_, step, mb, "forward", recipient=first_to)
            a0 = first.forward(header, b"", tokens, **signed(header, b"", tokens), source=source)
            header = MessageHeader(0, 1, round_, step, mb, "forward", recipient=middle_to[mb % 2])
            a1 = middle.forward(header, a0, tokens, **signed(header, a0, tokens), source=source)
            header = MessageHeader(0, 2, round_, step, mb, "forward", recipient=last_to)
            g2, _ = last.forward_backward(
                header, a1, tokens, targets, **signed(header, a1, tokens, targets), source=source
            )
            header = MessageHeader(0, 1, round_, step, mb, "backward", recipient=middle_to[mb % 2])
            g1 = middle.backward(header, g2, **signed(header, g2))
            header = MessageHeader(0, 0, round_, step, mb, "backward", recipient=first_to)
            first.backward(header, g1, **signed(header, g1))
        first.apply_step(round_, step)
        last.apply_step(round_, step)
        for index, replica in enumerate(replicas):
            replica.apply_step(round_, step, list(range(index, spec.micro_batches, 2)))
    return parents, replicas, average_state_bytes([r.state_bytes() for r in replicas])


def reframed(trace_bytes: bytes, change) -> bytes:
    """The trace with its JSON document changed in place by `change(document)`, payloads kept (NaN
    allowed: what a liar writes need not be canonical)."""
    (length,) = struct.unpack(">Q", trace_bytes[8:16])
    document = json.loads(trace_bytes[16 : 16 + length])
    change(document)
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return trace_bytes[:8] + struct.pack(">Q", len(raw)) + raw + trace_bytes[16 + length :]
