"""A finished round as the chain sees it: encrypted checkpoint + encrypted trace in the store, the
claim manifest that lists a claim's rounds; and the way back, for verifiers and newcomers.

What a claim commits to (per round in its manifest, offchain/proofs/manifest.py; the last round's
checkpoint and the rounds' Merkle root on-chain) and why:
- checkpointDigest = sha256 of the *plaintext* canonical stage state, so anyone holding the stage
  key can check a fetched checkpoint against the chain;
- checkpointCID / traceCID = CIDs of the *ciphertext* (AES-256-GCM under the stage key): what is
  public on IPFS reveals nothing of the weights;
- traceRoot = Merkle root of the step records, so a challenge can point at one step;
- the manifest is plaintext (CIDs and digests only), so anyone can see what a claim covers;
- workUnits = micro-batches the stage processed in the round (forward + backward of
  micro_batch_size x context tokens each), recomputable from the trace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from offchain.errors import UserError
from offchain.model.records import Trace
from offchain.proofs.manifest import ClaimManifest, ManifestError, RoundRecord
from offchain.proofs.trace import merkle_root
from offchain.storage.cids import cid_to_bytes32
from offchain.storage.crypto import StageKey, decrypt_checkpoint, encrypt_checkpoint
from offchain.storage.store import Store


class CheckpointMismatch(UserError):
    """Fetched content does not match what the chain committed to."""


@dataclass(frozen=True)
class PublishedRound(RoundRecord):
    """One stage's round, stored and ready to be put in a claim: a round record numbered by the
    swarm round the trace was trained in; the claim gives it its on-chain round (`record`)."""

    def record(self, chain_round: int) -> RoundRecord:
        """This round as round `chain_round` of a claim manifest."""
        return RoundRecord.from_json({**self.to_json(), "round": chain_round})


def work_units(trace: Trace) -> int:
    return sum(len(record.micro_batches) for record in trace.records)


def publish_round(store: Store, key: StageKey, state: bytes, trace: Trace) -> PublishedRound:
    """Encrypt and store the stage state and the round's trace; nothing touches the chain here."""
    if not trace.records:
        raise ValueError("a round with no steps cannot be claimed")
    return PublishedRound(
        round=trace.round,
        checkpoint_cid=store.put(encrypt_checkpoint(key, state)),
        checkpoint_digest=hashlib.sha256(state).digest(),
        trace_cid=store.put(encrypt_checkpoint(key, trace.to_bytes())),
        trace_root=merkle_root(trace.records),
        work_units=work_units(trace),
    )


def claim_input(manifest: ClaimManifest, manifest_cid: str) -> tuple[Any, ...]:
    """IWorkLedger.ClaimInput (v2) of the claim `manifest` describes (stored at `manifest_cid`):
    CIDs as the 32-byte digests inside their CIDv0, the last round's checkpoint, roundsRoot."""
    last = manifest.checkpoint
    return (
        manifest.model_id,
        manifest.stage,
        manifest.first_round,
        manifest.last_round,
        cid_to_bytes32(manifest.parent_cid) if manifest.parent_cid else bytes(32),
        cid_to_bytes32(last.checkpoint_cid),
        last.checkpoint_digest,
        manifest.rounds_root(),
        cid_to_bytes32(manifest_cid),
        manifest.work_units,
    )


def publish_manifest(store: Store, manifest: ClaimManifest) -> str:
    """Store a claim manifest (plaintext: it names only CIDs and digests); its CID."""
    return store.put(manifest.canonical_bytes())


def fetch_manifest(store: Store, cid: str, rounds_root: bytes) -> ClaimManifest:
    """The manifest at `cid`, parsed and checked against the claim's on-chain roundsRoot."""
    try:
        manifest = ClaimManifest.from_bytes(store.get(cid))
    except ManifestError as error:
        raise CheckpointMismatch(f"manifest {cid} is malformed: {error}") from None
    actual = manifest.rounds_root()
    if actual != rounds_root:
        raise CheckpointMismatch(
            f"manifest {cid} has rounds root {actual.hex()}, the chain says {rounds_root.hex()}"
        )
    return manifest


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
