"""A finished round as the chain sees it: encrypted checkpoint + encrypted trace in the store, and the
ClaimInput that commits to them; and the way back, for verifiers and newcomers.

What goes on-chain and why:
- checkpointDigest = sha256 of the *plaintext* canonical stage state, so anyone holding the stage
  key can check a fetched checkpoint against the chain;
- checkpointCID / traceCID = CIDs of the *ciphertext* (AES-256-GCM under the stage key): what is
  public on IPFS reveals nothing of the weights;
- traceRoot = Merkle root of the step records, so a challenge can point at one step;
- workUnits = micro-batches the stage processed in the round (forward + backward of
  micro_batch_size x context tokens each), recomputable from the trace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from offchain.errors import UserError
from offchain.model.records import Trace
from offchain.proofs.trace import merkle_root
from offchain.storage.crypto import StageKey, decrypt_checkpoint, encrypt_checkpoint_stream
from offchain.storage.store import Store


class CheckpointMismatch(UserError):
    """Fetched content does not match what the chain committed to."""


@dataclass(frozen=True)
class PublishedRound:
    """One stage's round, stored and ready to be claimed."""

    model_id: int
    stage: int
    round: int
    parent_cid: str
    checkpoint_cid: str
    checkpoint_digest: bytes
    trace_cid: str
    trace_root: bytes
    work_units: int

    def claim_input(self) -> tuple[Any, ...]:
        """IWorkLedger.ClaimInput, in field order."""
        return (
            self.model_id,
            self.stage,
            self.round,
            self.parent_cid,
            self.checkpoint_cid,
            self.checkpoint_digest,
            self.trace_root,
            self.trace_cid,
            self.work_units,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "stage": self.stage,
            "round": self.round,
            "parent_cid": self.parent_cid,
            "checkpoint_cid": self.checkpoint_cid,
            "checkpoint_digest": self.checkpoint_digest.hex(),
            "trace_cid": self.trace_cid,
            "trace_root": self.trace_root.hex(),
            "work_units": self.work_units,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishedRound:
        return cls(
            data["model_id"],
            data["stage"],
            data["round"],
            data["parent_cid"],
            data["checkpoint_cid"],
            bytes.fromhex(data["checkpoint_digest"]),
            data["trace_cid"],
            bytes.fromhex(data["trace_root"]),
            data["work_units"],
        )


def work_units(trace: Trace) -> int:
    return sum(len(record.micro_batches) for record in trace.records)


def publish_round(
    store: Store, key: StageKey, state: bytes, trace: Trace, *, parent_cid: str
) -> PublishedRound:
    """Encrypt and store the stage state and the round's trace; nothing touches the chain here."""
    if not trace.records:
        raise ValueError("a round with no steps cannot be claimed")
    return PublishedRound(
        model_id=trace.model_id,
        stage=trace.stage,
        round=trace.round,
        parent_cid=parent_cid,
        checkpoint_cid=store.put(encrypt_checkpoint_stream(key, state)),
        checkpoint_digest=hashlib.sha256(state).digest(),
        trace_cid=store.put(encrypt_checkpoint_stream(key, trace.to_bytes())),
        trace_root=merkle_root(trace.records),
        work_units=work_units(trace),
    )


def fetch_checkpoint(store: Store, key: StageKey, cid: str, digest: bytes) -> bytes:
    """The plaintext stage state at `cid`, checked against the on-chain digest."""
    state = decrypt_checkpoint(key, store.get(cid))
    actual = hashlib.sha256(state).digest()
    if actual != digest:
        raise CheckpointMismatch(
            f"checkpoint {cid} decrypts to digest {actual.hex()}, the chain says {digest.hex()}"
        )
    return state


def fetch_trace(store: Store, key: StageKey, cid: str, root: bytes) -> Trace:
    """The trace at `cid`, parsed (every payload checked) and checked against the on-chain root."""
    try:
        trace = Trace.from_bytes(decrypt_checkpoint(key, store.get(cid)))
    except ValueError as error:
        raise CheckpointMismatch(f"trace {cid} is malformed: {error}") from None
    actual = merkle_root(trace.records)
    if actual != root:
        raise CheckpointMismatch(f"trace {cid} has Merkle root {actual.hex()}, the chain says {root.hex()}")
    return trace
