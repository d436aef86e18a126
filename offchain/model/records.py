"""What a stage worker records while it trains: message headers, signed messages, one record per
optimizer step, and the round's trace with a canonical serialisation.

Pure data (no torch, no eth): the trainer writes these, the proofs package signs, hashes and
replays them, the storage layer pins the bytes."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Literal

Direction = Literal["forward", "backward"]
_DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")
_HEADER = struct.Struct(">6sQ20sQHQIIB20s")
_HEADER_MAGIC = b"PMMSG3"
NO_LEDGER = "0x" + "00" * 20
"""The `ledger` of messages in an off-chain swarm (`--model-spec`, chain id 0)."""
NOBODY = NO_LEDGER
"""The `recipient` of a message addressed to no worker: every stage server and verifier refuses it
(no account signs as the zero address); the single-process reference and local tests use it."""
_TRACE_MAGIC = b"PMTRACE1"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class MessageHeader:
    """Identifies one message between stages. `stage` is the stage that RECEIVES the message:
    a forward message to stage s carries stage s-1's activation, a backward one stage s+1's grad.

    `chain_id` and `ledger` (the WorkLedger address) name the deployment the message belongs to, so
    a signature made for one chain or deployment is worthless on another (0 / NO_LEDGER off-chain).

    `recipient` is the address of the WORKER the message is for (the stage names only its stage):
    the worker refuses a message addressed to anyone else, and a verifier refutes a claim whose
    trace holds a message not addressed to the claiming worker, so a trace cannot be claimed by
    another member of the stage (audit F6)."""

    model_id: int
    stage: int
    round: int
    step: int
    micro_batch: int
    direction: Direction
    chain_id: int = 0
    ledger: str = NO_LEDGER
    recipient: str = NOBODY

    def __post_init__(self) -> None:
        for name in ("ledger", "recipient"):
            value = getattr(self, name)
            if not (
                isinstance(value, str)
                and len(value) == 42
                and value.startswith("0x")
                and value[2:] == value[2:].lower()
            ):
                raise ValueError(f"message {name} {value!r} is not a lowercase 0x-prefixed address")

    def encode(self) -> bytes:
        """Fixed-width big-endian bytes: what a signature covers (with the payload digest)."""
        return _HEADER.pack(
            _HEADER_MAGIC,
            self.chain_id,
            bytes.fromhex(self.ledger.removeprefix("0x")),
            self.model_id,
            self.stage,
            self.round,
            self.step,
            self.micro_batch,
            _DIRECTIONS.index(self.direction),
            bytes.fromhex(self.recipient.removeprefix("0x")),
        )

    @classmethod
    def decode(cls, data: bytes) -> MessageHeader:
        if len(data) != _HEADER.size:
            raise ValueError(f"message header has {len(data)} bytes, expected {_HEADER.size}")
        magic, chain_id, ledger, model_id, stage, round_, step, micro_batch, direction, recipient = (
            _HEADER.unpack(data)
        )
        if magic != _HEADER_MAGIC or direction >= len(_DIRECTIONS):
            raise ValueError("not a protocol-models message header")
        return cls(
            model_id,
            stage,
            round_,
            step,
            micro_batch,
            _DIRECTIONS[direction],
            chain_id,
            "0x" + ledger.hex(),
            "0x" + recipient.hex(),
        )


def message_payload(*parts: bytes) -> bytes:
    """The bytes a message signature covers (by digest): its parts, each length-prefixed.

    forward to a middle stage: (activation, tokens); to the last stage: (activation, tokens,
    targets); stage 0 gets activation = b"". backward: (grad,)."""
    return b"".join(struct.pack(">Q", len(part)) + part for part in parts)


@dataclass(frozen=True)
class SignedMessage:
    """A message as received: header, digest of message_payload(...), claimed sender, signature."""

    header: MessageHeader
    payload_digest: str
    sender: str
    signature: bytes

    def to_json(self) -> dict:
        return {
            "header": asdict(self.header),
            "payload_digest": self.payload_digest,
            "sender": self.sender,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict) -> SignedMessage:
        return cls(
            MessageHeader(**data["header"]),
            data["payload_digest"],
            data["sender"],
            bytes.fromhex(data["signature"]),
        )


@dataclass(frozen=True)
class MicroBatchRecord:
    """Digests of one micro-batch's inputs (activation, tokens, targets, grad: whichever the
    stage receives) and outputs (activation sent right, grad sent left), and its loss (last stage).
    `source`: where the driver took the token ids from, (shard, offset) per row of the data set's
    train split (offchain/data/sampler.py); None when the spec names no prepared data set."""

    index: int
    inputs: dict[str, str]
    outputs: dict[str, str]
    loss: float | None = None
    source: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def from_json(cls, data: dict) -> MicroBatchRecord:
        source = data["source"]
        rows = None if source is None else tuple((int(shard), int(offset)) for shard, offset in source)
        return cls(data["index"], data["inputs"], data["outputs"], data["loss"], rows)


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step. state_before/after are digests of the canonical state bytes
    (weights + optimizer state), so an altered weight or moment shows at the step it appeared."""

    round: int
    step: int
    state_before: str
    state_after: str
    micro_batches: tuple[MicroBatchRecord, ...]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> StepRecord:
        micro = tuple(MicroBatchRecord.from_json(mb) for mb in data["micro_batches"])
        return cls(data["round"], data["step"], data["state_before"], data["state_after"], micro)

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass
class Trace:
    """A stage's round: who/what/where, the step records, the signed input messages and the
    input payloads (by digest), so a verifier can recompute the round from the parent state.
    `profile` is the digest of the compute profile the round ran under (replay is bitwise only
    within one profile)."""

    model_id: int
    stage: int
    round: int
    spec_digest: str
    profile: str
    parent_digest: str
    records: list[StepRecord] = field(default_factory=list)
    messages: list[SignedMessage] = field(default_factory=list)
    payloads: dict[str, bytes] = field(default_factory=dict)

    def add_payload(self, data: bytes) -> str:
        digest = sha256_hex(data)
        self.payloads[digest] = data
        return digest

    def to_bytes(self) -> bytes:
        """MAGIC, u64 length of a canonical JSON document, then the payloads sorted by digest
        (their sizes are in the JSON). Equal traces give equal bytes."""
        digests = sorted(self.payloads)
        document = canonical_json(
            {
                "model_id": self.model_id,
                "stage": self.stage,
                "round": self.round,
                "spec_digest": self.spec_digest,
                "profile": self.profile,
                "parent_digest": self.parent_digest,
                "records": [record.to_json() for record in self.records],
                "messages": [message.to_json() for message in self.messages],
                "payloads": [[digest, len(self.payloads[digest])] for digest in digests],
            }
        )
        blobs = b"".join(self.payloads[digest] for digest in digests)
        return _TRACE_MAGIC + struct.pack(">Q", len(document)) + document + blobs

    @classmethod
    def from_bytes(cls, data: bytes) -> Trace:
        """Parse and check: every payload must hash to the digest it is filed under."""
        if not data.startswith(_TRACE_MAGIC):
            raise ValueError("not a protocol-models trace")
        start = len(_TRACE_MAGIC) + 8
        (length,) = struct.unpack(">Q", data[len(_TRACE_MAGIC) : start])
        document = json.loads(data[start : start + length])
        offset = start + length
        payloads = {}
        for digest, size in document["payloads"]:
            blob = data[offset : offset + size]
            if len(blob) != size or sha256_hex(blob) != digest:
                raise ValueError(f"trace payload {digest[:16]}... is truncated or does not match its digest")
            payloads[digest] = blob
            offset += size
        if offset != len(data):
            raise ValueError(f"trace has {len(data) - offset} trailing bytes")
        return cls(
            document["model_id"],
            document["stage"],
            document["round"],
            document["spec_digest"],
            document["profile"],
            document["parent_digest"],
            [StepRecord.from_json(record) for record in document["records"]],
            [SignedMessage.from_json(message) for message in document["messages"]],
            payloads,
        )
