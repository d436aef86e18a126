"""A claim's content fetched under hard limits and decoded strictly: every way it can be bad is a
`Refused` naming the reason, which becomes the claim's verdict (invalid) and the challenge's
evidence; nothing a worker publishes can raise anything else here.

Three outcomes per fetch, told apart because they lead to different verdicts:
- `Refused`: the content is there and wrong (over a limit, undecryptable, malformed, not what the
  chain committed to): the claim is invalid;
- `ContentUnavailable` (from the store): nobody serves it yet: patience, then withheld;
- any other StorageError: this validator's own store is in trouble (Kubo down): no verdict.

The trace is checked against a strict schema (no missing, extra or mistyped field) before the
model layer parses it, so the replay only ever sees well-typed records.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offchain.chain.models import fetch_spec
from offchain.errors import UserError
from offchain.model.records import Trace
from offchain.model.spec import ModelSpec
from offchain.proofs.manifest import ClaimManifest, ManifestError
from offchain.proofs.trace import merkle_root
from offchain.storage.crypto import HEADER_LEN, StageKey, decrypt_checkpoint, key_id_of
from offchain.storage.errors import ContentTooLarge, DecryptionError, InvalidCID, StorageError
from offchain.storage.store import Store
from offchain.verifier.check import SubmittedClaim
from offchain.verifier.limits import LimitExceeded, StageLimits, manifest_bytes


class Refused(Exception):
    """Content that refutes the claim naming it; the message is the reason a challenge carries, and
    `round` the round of the claim it refutes (None: the claim as a whole, e.g. its manifest)."""

    def __init__(self, reason: str, round: int | None = None) -> None:
        super().__init__(reason)
        self.round = round


def fetch(store: Store, cid: str, max_size: int, what: str) -> bytes:
    """The verified bytes at `cid`, at most `max_size` of them. A CID that cannot name a file, or a
    file over the limit, refutes; being unavailable does not (the store's error passes through)."""
    try:
        return store.get(cid, max_size=max_size)
    except (ContentTooLarge, InvalidCID) as error:
        raise Refused(f"{what}: {error}") from None


def key_id_in(store: Store, cid: str, max_size: int, what: str) -> bytes:
    """The id of the stage key the ciphertext at `cid` names in its header (members rotate their
    stage's key after a departure, so one stage's content may be under several keys): read from the
    file's first pieces, under the same limit as the whole file. A file that is not a ciphertext of
    ours refutes; being unavailable does not."""
    head = b""
    try:
        for piece in store.get_pieces(cid, max_size=max_size):
            head += bytes(piece[: HEADER_LEN - len(head)])
            if len(head) == HEADER_LEN:
                break
        return key_id_of(head)
    except (ContentTooLarge, InvalidCID, DecryptionError) as error:
        raise Refused(f"{what}: {error}") from None


def open_spec(store: Store, cid: str) -> ModelSpec:
    """The model's spec, checked against what a validator can judge: a valid spec within the size
    limits (every claim on a model that fails this is refused). Its data set is opened when a round
    is replayed: one that cannot be read leaves claims undecided (check.py)."""
    try:
        spec = fetch_spec(store, cid)
    except (ContentTooLarge, InvalidCID) as error:
        raise Refused(f"model spec: {error}") from None
    except StorageError:
        raise
    except UserError as error:
        raise Refused(str(error)) from None
    return spec


def stage_limits(spec: ModelSpec, stage: int, spec_cid: str) -> StageLimits:
    if not 0 <= stage < spec.num_stages:
        raise Refused(f"stage {stage} is not a stage of the spec at {spec_cid} ({spec.num_stages} stages)")
    try:
        return StageLimits.of(spec, stage)
    except LimitExceeded as error:
        raise Refused(f"model spec {spec_cid}: {error}") from None


def open_manifest(store: Store, claim: SubmittedClaim) -> ClaimManifest:
    """The claim's manifest, which must describe exactly the claim the chain holds: its model, stage,
    rounds, parent, last checkpoint, work units and roundsRoot."""
    cid = claim.manifest_cid
    blob = fetch(store, cid, manifest_bytes(len(claim.rounds)), f"manifest {cid}")
    try:
        manifest = ClaimManifest.from_bytes(blob)
    except ManifestError as error:
        raise Refused(f"manifest {cid}: {error}") from None
    last = manifest.checkpoint
    said = (
        manifest.model_id,
        manifest.stage,
        manifest.first_round,
        manifest.last_round,
        manifest.parent_cid,
        last.checkpoint_cid,
        last.checkpoint_digest.hex(),
        manifest.work_units,
        manifest.rounds_root().hex(),
    )
    chain = (
        claim.model_id,
        claim.stage,
        claim.first_round,
        claim.last_round,
        claim.parent_cid,
        claim.checkpoint_cid,
        claim.checkpoint_digest,
        claim.work_units,
        claim.rounds_root,
    )
    names = ("model", "stage", "first round", "last round", "parent", "checkpoint", "digest", "work units")
    for name, mine, theirs in zip((*names, "rounds root"), said, chain, strict=True):
        if mine != theirs:
            raise Refused(f"manifest {cid}: its {name} is {mine}, the claim's is {theirs}")
    return manifest


def open_checkpoint(store: Store, key: StageKey, cid: str, digest: bytes, limits: StageLimits) -> bytes:
    """The plaintext state at `cid`, which must hash to `digest` (what the chain holds for it)."""
    try:
        state = decrypt_checkpoint(key, fetch(store, cid, limits.checkpoint_bytes, f"checkpoint {cid}"))
    except DecryptionError as error:
        raise Refused(f"checkpoint {cid}: {error}") from None
    actual = hashlib.sha256(state).digest()
    if actual != digest:
        raise Refused(f"checkpoint {cid} decrypts to digest {actual.hex()}, the chain says {digest.hex()}")
    return state


def open_trace(store: Store, key: StageKey, cid: str, root: bytes, limits: StageLimits) -> Trace:
    """The round's trace at `cid`, decoded strictly and checked against the on-chain Merkle root."""
    try:
        blob = decrypt_checkpoint(key, fetch(store, cid, limits.encrypted_trace_bytes, f"trace {cid}"))
    except DecryptionError as error:
        raise Refused(f"trace {cid}: {error}") from None
    try:
        trace = decode_trace(blob, limits)
    except Refused as refusal:
        raise Refused(f"trace {cid}: {refusal}") from None
    actual = merkle_root(trace.records)
    if actual != root:
        raise Refused(f"trace {cid} has Merkle root {actual.hex()}, the chain says {root.hex()}")
    return trace


# -- the trace's schema (offchain/model/records.py `Trace.to_bytes`) -------------------------------

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
U64 = Annotated[int, Field(ge=0, lt=2**64)]
U32 = Annotated[int, Field(ge=0, lt=2**32)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _Header(_Strict):
    model_id: U64
    stage: Annotated[int, Field(ge=0, lt=2**16)]
    round: U64
    step: U32
    micro_batch: U32
    direction: Literal["forward", "backward"]
    chain_id: U64
    ledger: Annotated[str, Field(pattern=r"^0x[0-9a-f]{40}$")]  # the deployment the message is bound to
    recipient: Annotated[str, Field(pattern=r"^0x[0-9a-f]{40}$")]  # the worker the message is for


class _Message(_Strict):
    header: _Header
    payload_digest: Hex64
    sender: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{130}$")]


class _MicroBatch(_Strict):
    index: U32
    inputs: dict[Literal["activation", "tokens", "targets", "grad"], Hex64]
    outputs: dict[Literal["activation", "grad"], Hex64]
    loss: float | None
    source: Annotated[list[tuple[U64, U64]], Field(min_length=1)] | None  # (shard, offset) per row


class _Record(_Strict):
    round: U64
    step: U32
    state_before: Hex64
    state_after: Hex64
    micro_batches: list[_MicroBatch]


class _TraceDocument(_Strict):
    model_id: U64
    stage: Annotated[int, Field(ge=0, lt=256)]
    round: U64
    spec_digest: Hex64
    profile: Hex64  # the compute profile's digest (offchain/model/profile.py)
    parent_digest: Hex64
    records: Annotated[list[_Record], Field(min_length=1)]
    messages: list[_Message]
    payloads: list[tuple[Hex64, Annotated[int, Field(ge=0)]]]


_MAGIC = b"PMTRACE1"
_PREFIX = len(_MAGIC) + 8


def decode_trace(blob: bytes, limits: StageLimits) -> Trace:
    """A trace's bytes as a Trace, or Refused: framing, schema (every field present, none extra,
    each of its type), payload sizes within the stage's message limit, payloads matching digests."""
    if len(blob) < _PREFIX or not blob.startswith(_MAGIC):
        raise Refused("not a protocol-models trace")
    (length,) = struct.unpack(">Q", blob[len(_MAGIC) : _PREFIX])
    if length > len(blob) - _PREFIX:
        raise Refused(f"its document claims {length} bytes, the trace has {len(blob) - _PREFIX}")
    try:
        document = _TraceDocument.model_validate_json(blob[_PREFIX : _PREFIX + length])
    except ValidationError as error:
        raise Refused(f"malformed: {_first_error(error)}") from None
    for digest, size in document.payloads:
        if size > limits.message_bytes:
            raise Refused(
                f"payload {digest[:16]}... has {size} bytes, above the stage's {limits.message_bytes}-byte "
                "message limit"
            )
    try:
        return Trace.from_bytes(blob)
    except ValueError as error:
        raise Refused(str(error)) from None


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{where}: {message}"
