"""A worker's claim journal: one durable file per round it published, so a restarted worker knows
what it stored, what it sent and what the chain did with it, and never claims a round twice.

A round moves PUBLISHED -> SENDING (written before the transaction goes out) -> SUBMITTED (claim
id known) -> FINALIZED or REJECTED; a round that can no longer be claimed (the stage's checkpoint
moved past it, or its parent was never finalized) ends SKIPPED. A SENDING round found after a
restart may or may not have reached the chain: the worker looks the claim up before anything else.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from offchain.durable import write_atomic
from offchain.proofs.rounds import PublishedRound


class RoundStatus(StrEnum):
    PUBLISHED = "published"
    SENDING = "sending"
    SUBMITTED = "submitted"
    FINALIZED = "finalized"
    REJECTED = "rejected"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (RoundStatus.FINALIZED, RoundStatus.REJECTED, RoundStatus.SKIPPED)


@dataclass(frozen=True)
class RoundEntry:
    """One published round and what became of it. `published.parent_cid` is filled in at submission
    (the parent is whatever checkpoint the chain holds then, checked by digest). `parent_digest` and
    `state_digest` are the sha256 of the states the round really started from and committed (a
    `--cheat` run may publish something else)."""

    published: PublishedRound
    parent_digest: bytes
    state_digest: bytes
    status: RoundStatus
    block: int
    tx: str | None = None
    claim_id: int | None = None
    challenged: bool = False

    @property
    def round(self) -> int:
        return self.published.round

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            published=self.published.to_json(),
            parent_digest=self.parent_digest.hex(),
            state_digest=self.state_digest.hex(),
            status=self.status.value,
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundEntry:
        return cls(
            published=PublishedRound.from_json(data["published"]),
            parent_digest=bytes.fromhex(data["parent_digest"]),
            state_digest=bytes.fromhex(data["state_digest"]),
            status=RoundStatus(data["status"]),
            block=data["block"],
            tx=data["tx"],
            claim_id=data["claim_id"],
            challenged=data["challenged"],
        )


class ClaimJournal:
    """The rounds of one (model, stage) this worker published, kept in `directory` (thread-safe:
    the commit hook adds rounds while the ledger loop updates them)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries = {
            entry.round: entry
            for entry in (
                RoundEntry.from_json(json.loads(p.read_text())) for p in directory.glob("round-*.json")
            )
        }

    def _path(self, round_: int) -> Path:
        return self.directory / f"round-{round_:012d}.json"

    def put(self, entry: RoundEntry) -> RoundEntry:
        """Write `entry` durably (replacing the round's previous entry) before returning it."""
        with self._lock:
            write_atomic(self._path(entry.round), json.dumps(entry.to_json(), indent=1).encode())
            self._entries[entry.round] = entry
        return entry

    def update(self, entry: RoundEntry, **changes: Any) -> RoundEntry:
        return self.put(replace(entry, **changes))

    def get(self, round_: int) -> RoundEntry | None:
        with self._lock:
            return self._entries.get(round_)

    def entries(self) -> list[RoundEntry]:
        """Every round, oldest first."""
        with self._lock:
            return [self._entries[round_] for round_ in sorted(self._entries)]

    def open_entries(self) -> list[RoundEntry]:
        return [entry for entry in self.entries() if not entry.status.terminal]

    def committed_digests(self) -> set[bytes]:
        """Digests of every state whose round this worker published (such a state on disk can still
        lead to claims; one whose round was never published cannot)."""
        return {entry.state_digest for entry in self.entries()}
