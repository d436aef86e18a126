"""The claim manifest: what one chained claim covers, round by round, and its `roundsRoot`.

A claim may cover rounds first..last of one stage (IWorkLedger v2). The chain keeps only the last
round's checkpoint, the total work units and `roundsRoot`; the manifest (stored plaintext, its
CID in the ClaimSubmitted event) lists every round's checkpoint and trace, so a validator can
fetch and replay any of them and a challenge can name one round.

Canonical bytes: JSON with sorted keys and no spaces, digests as lowercase hex (no 0x), CIDs as
text, `parent_cid` null when the first round starts from the spec's seed:

    {"first_round":a,"last_round":b,"model_id":M,"parent_cid":"Qm..",
     "rounds":[{"checkpoint_cid":"Qm..","checkpoint_digest":"..","profile":null,"round":a,
                "trace_cid":"Qm..","trace_root":"..","work_units":n}, ...],"stage":S,"version":1}

roundsRoot is the Merkle root (offchain/proofs/trace.py: keccak leaves and nodes, domain-separated)
over sha256(canonical JSON of each round record), in round order; `proof(round)` and
`verify_round` let a challenger carry one round's record as evidence against the on-chain root.

A claim's "round" is the depth of the stage's lineage on-chain (parent round + 1): it equals the
swarm round the trace was trained in, except after a sole member went back to an earlier
checkpoint of its lane (offchain/worker/claims.py), where the trace's round is the later one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from offchain.proofs.trace import proof_of_leaves, root_of_leaves, tree_leaf, verify_leaf_proof

MANIFEST_VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{64}")
_ROUND_KEYS = {
    "round",
    "checkpoint_cid",
    "checkpoint_digest",
    "trace_cid",
    "trace_root",
    "work_units",
    "profile",
}
_MANIFEST_KEYS = {"version", "model_id", "stage", "first_round", "last_round", "parent_cid", "rounds"}


class ManifestError(ValueError):
    """Bytes that are not a well-formed claim manifest (or not the one a claim committed to)."""


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _uint(data: dict[str, Any], key: str, where: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    return value


def _text(data: dict[str, Any], key: str, where: str, *, nullable: bool = False) -> str | None:
    value = data[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _digest(data: dict[str, Any], key: str, where: str) -> bytes:
    value = data[key]
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise ManifestError(f"{where}: {key} must be 64 lowercase hex digits, got {value!r}")
    return bytes.fromhex(value)


def _keys(data: Any, expected: set[str], where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != expected:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ManifestError(f"{where}: expected the fields {sorted(expected)}, got {found}")
    return data


@dataclass(frozen=True)
class RoundRecord:
    """One round of a claim: its checkpoint (CID of the ciphertext, sha256 of the plaintext), its
    trace (CID, Merkle root of the step records), its work units and compute profile."""

    round: int
    checkpoint_cid: str
    checkpoint_digest: bytes
    trace_cid: str
    trace_root: bytes
    work_units: int
    profile: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "checkpoint_cid": self.checkpoint_cid,
            "checkpoint_digest": self.checkpoint_digest.hex(),
            "trace_cid": self.trace_cid,
            "trace_root": self.trace_root.hex(),
            "work_units": self.work_units,
            "profile": self.profile,
        }

    @classmethod
    def from_json(cls, data: Any) -> RoundRecord:
        where = "round record"
        data = _keys(data, _ROUND_KEYS, where)
        return cls(
            round=_uint(data, "round", where),
            checkpoint_cid=_text(data, "checkpoint_cid", where),
            checkpoint_digest=_digest(data, "checkpoint_digest", where),
            trace_cid=_text(data, "trace_cid", where),
            trace_root=_digest(data, "trace_root", where),
            work_units=_uint(data, "work_units", where),
            profile=_text(data, "profile", where, nullable=True),
        )

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def leaf(self) -> bytes:
        """This record's leaf node in the roundsRoot tree."""
        return tree_leaf(hashlib.sha256(self.canonical_bytes()).digest())


@dataclass(frozen=True)
class ClaimManifest:
    """Rounds first..last of one (model, stage), contiguous, the first one started from `parent_cid`."""

    model_id: int
    stage: int
    parent_cid: str | None
    rounds: tuple[RoundRecord, ...]
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if self.version != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {self.version} (this code reads {MANIFEST_VERSION})")
        if not self.rounds:
            raise ManifestError("a claim manifest covers at least one round")
        numbers = [record.round for record in self.rounds]
        if self.first_round < 1 or numbers != list(range(self.first_round, self.first_round + len(numbers))):
            raise ManifestError(f"rounds must be contiguous and start at 1 or later, got {numbers}")
        if any(record.work_units < 1 for record in self.rounds):
            raise ManifestError("every round of a claim has at least one work unit")

    @property
    def first_round(self) -> int:
        return self.rounds[0].round

    @property
    def last_round(self) -> int:
        return self.rounds[-1].round

    @property
    def work_units(self) -> int:
        return sum(record.work_units for record in self.rounds)

    @property
    def checkpoint(self) -> RoundRecord:
        """The last round's record: its checkpoint is the claim's checkpoint."""
        return self.rounds[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_id": self.model_id,
            "stage": self.stage,
            "first_round": self.first_round,
            "last_round": self.last_round,
            "parent_cid": self.parent_cid,
            "rounds": [record.to_json() for record in self.rounds],
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> ClaimManifest:
        where = "claim manifest"
        data = _keys(data, _MANIFEST_KEYS, where)
        rounds = data["rounds"]
        if not isinstance(rounds, list):
            raise ManifestError(f"{where}: rounds must be a list")
        manifest = cls(
            model_id=_uint(data, "model_id", where),
            stage=_uint(data, "stage", where),
            parent_cid=_text(data, "parent_cid", where, nullable=True),
            rounds=tuple(RoundRecord.from_json(record) for record in rounds),
            version=_uint(data, "version", where),
        )
        stated = (_uint(data, "first_round", where), _uint(data, "last_round", where))
        if stated != (manifest.first_round, manifest.last_round):
            raise ManifestError(
                f"{where}: first_round/last_round {stated} do not match its rounds "
                f"{manifest.first_round}..{manifest.last_round}"
            )
        return manifest

    @classmethod
    def from_bytes(cls, data: bytes) -> ClaimManifest:
        """Parse and validate; only canonical bytes are accepted (the CID commits to them)."""
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ManifestError(f"claim manifest is not JSON: {error}") from None
        manifest = cls.from_json(document)
        if manifest.canonical_bytes() != bytes(data):
            raise ManifestError("claim manifest is not in canonical form (sorted keys, no spaces)")
        return manifest

    # ---- roundsRoot ---------------------------------------------------------------------------

    def rounds_root(self) -> bytes:
        return root_of_leaves([record.leaf for record in self.rounds])

    def index_of(self, round_: int) -> int:
        if not self.first_round <= round_ <= self.last_round:
            raise ManifestError(
                f"round {round_} is not in this claim ({self.first_round}..{self.last_round})"
            )
        return round_ - self.first_round

    def record(self, round_: int) -> RoundRecord:
        return self.rounds[self.index_of(round_)]

    def proof(self, round_: int) -> list[bytes]:
        """The Merkle proof of `round_`'s record against `rounds_root()`."""
        return proof_of_leaves([record.leaf for record in self.rounds], self.index_of(round_))


def verify_round(
    record: RoundRecord, first_round: int, last_round: int, proof: list[bytes], rounds_root: bytes
) -> bool:
    """Whether `record` is the record of its round in a claim of rounds first..last with `rounds_root`."""
    count = last_round - first_round + 1
    return verify_leaf_proof(record.leaf, record.round - first_round, count, proof, rounds_root)
