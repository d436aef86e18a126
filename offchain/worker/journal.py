"""A worker's claim journal: what it stored, what it claimed and what the chain did with it, kept on
disk so a restarted worker (even after kill -9) never claims a round twice nor forgets one.

Two kinds of files, each written atomically (offchain/durable.py):
- `round-<swarm round>.json`: one published round (checkpoint and trace stored), the digests of
  the states it really started from and ended at, and whether it was DROPPED (it can never be
  claimed: it does not follow the lane's tip);
- `claim-<first swarm round>.json`: one claim, covering consecutive published rounds, with its
  manifest. A claim moves PREPARED (manifest stored, not sent) -> SENDING (written before the
  transaction goes out) -> SUBMITTED (claim id known) -> FINALIZED, REJECTED or VOIDED (a
  rejection of an earlier claim of the lane voided it); a PREPARED claim that no longer follows
  the lane's tip when its turn comes is ABANDONED and its rounds are free again.

A round belongs to at most one live claim: a claim file is the one write that takes rounds, so a
crash either took them or did not. A SENDING claim found after a restart may or may not have
reached the chain: the worker looks it up (by its manifest CID) before anything else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from offchain.durable import write_atomic
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import PublishedRound


class RoundStatus(StrEnum):
    PUBLISHED = "published"
    DROPPED = "dropped"


class ClaimState(StrEnum):
    PREPARED = "prepared"
    SENDING = "sending"
    SUBMITTED = "submitted"
    FINALIZED = "finalized"
    REJECTED = "rejected"
    VOIDED = "voided"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self in (ClaimState.FINALIZED, ClaimState.REJECTED, ClaimState.VOIDED, ClaimState.ABANDONED)


@dataclass(frozen=True)
class RoundEntry:
    """One published round. `parent_digest` / `state_digest` are the sha256 of the states the round
    really started from and committed (a `--cheat` run may publish something else); `published_at`
    is the chain time (latest block) when it was stored."""

    published: PublishedRound
    parent_digest: bytes
    state_digest: bytes
    published_at: int
    block: int
    status: RoundStatus = RoundStatus.PUBLISHED

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
            published_at=data["published_at"],
            block=data["block"],
            status=RoundStatus(data["status"]),
        )


@dataclass(frozen=True)
class ClaimEntry:
    """One claim of this worker's lane: the published rounds it covers (`swarm_rounds`, in order),
    its manifest and where it is in its life. `parent_digest` is the state its first round started
    from, `state_digest` the state its last round committed; `block` is where event scans for it
    start; `deadline` is its challenge deadline (chain time) once submitted."""

    manifest: ClaimManifest
    manifest_cid: str
    swarm_rounds: tuple[int, ...]
    parent_digest: bytes
    state_digest: bytes
    block: int
    state: ClaimState = ClaimState.PREPARED
    tx: str | None = None
    claim_id: int | None = None
    deadline: int | None = None
    challenged: bool = False

    @property
    def rounds(self) -> str:
        """`first..last` (on-chain rounds), for logs."""
        first, last = self.manifest.first_round, self.manifest.last_round
        return f"round {first}" if first == last else f"rounds {first}..{last}"

    @property
    def cids(self) -> list[str]:
        """Everything a validator fetches for this claim."""
        records = self.manifest.rounds
        return [self.manifest_cid, *(c for r in records for c in (r.checkpoint_cid, r.trace_cid))]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            manifest=self.manifest.to_json(),
            swarm_rounds=list(self.swarm_rounds),
            parent_digest=self.parent_digest.hex(),
            state_digest=self.state_digest.hex(),
            state=self.state.value,
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimEntry:
        return cls(
            manifest=ClaimManifest.from_json(data["manifest"]),
            manifest_cid=data["manifest_cid"],
            swarm_rounds=tuple(data["swarm_rounds"]),
            parent_digest=bytes.fromhex(data["parent_digest"]),
            state_digest=bytes.fromhex(data["state_digest"]),
            block=data["block"],
            state=ClaimState(data["state"]),
            tx=data["tx"],
            claim_id=data["claim_id"],
            deadline=data["deadline"],
            challenged=data["challenged"],
        )


def _load(directory: Path, pattern: str, parse: Callable[[dict[str, Any]], Any]) -> list[Any]:
    return [parse(json.loads(path.read_text())) for path in sorted(directory.glob(pattern))]


class ClaimJournal:
    """The rounds and claims of one (model, stage) of this worker, kept in `directory` (thread-safe:
    the commit hook adds rounds while the ledger loop moves claims along)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rounds = {e.round: e for e in _load(directory, "round-*.json", RoundEntry.from_json)}
        self._claims = {e.swarm_rounds[0]: e for e in _load(directory, "claim-*.json", ClaimEntry.from_json)}

    def _write(self, name: str, document: dict[str, Any]) -> None:
        write_atomic(self.directory / name, json.dumps(document, indent=1).encode())

    # ---- rounds -------------------------------------------------------------------------------

    def put_round(self, entry: RoundEntry) -> RoundEntry:
        """Write `entry` durably (replacing the round's previous entry) before returning it."""
        with self._lock:
            self._write(f"round-{entry.round:012d}.json", entry.to_json())
            self._rounds[entry.round] = entry
        return entry

    def drop_round(self, entry: RoundEntry) -> RoundEntry:
        return self.put_round(replace(entry, status=RoundStatus.DROPPED))

    def round(self, swarm_round: int) -> RoundEntry | None:
        with self._lock:
            return self._rounds.get(swarm_round)

    def rounds(self) -> list[RoundEntry]:
        """Every published round, oldest first."""
        with self._lock:
            return [self._rounds[r] for r in sorted(self._rounds)]

    def claim_of_round(self, swarm_round: int) -> ClaimEntry | None:
        """The live (not abandoned) claim that covers a swarm round, if any."""
        return next(
            (
                claim
                for claim in self.claims()
                if claim.state is not ClaimState.ABANDONED and swarm_round in claim.swarm_rounds
            ),
            None,
        )

    def unclaimed_rounds(self) -> list[RoundEntry]:
        """Published rounds no live claim covers and not dropped, oldest first."""
        taken = {
            r
            for claim in self.claims()
            if claim.state is not ClaimState.ABANDONED
            for r in claim.swarm_rounds
        }
        return [e for e in self.rounds() if e.status is RoundStatus.PUBLISHED and e.round not in taken]

    def state_digests(self) -> set[bytes]:
        """Digests of every state whose round this worker published (such a state on disk may still
        lead to claims; one whose round was never published cannot)."""
        return {entry.state_digest for entry in self.rounds()}

    # ---- claims -------------------------------------------------------------------------------

    def put_claim(self, entry: ClaimEntry) -> ClaimEntry:
        with self._lock:
            self._write(f"claim-{entry.swarm_rounds[0]:012d}.json", entry.to_json())
            self._claims[entry.swarm_rounds[0]] = entry
        return entry

    def update_claim(self, entry: ClaimEntry, **changes: Any) -> ClaimEntry:
        return self.put_claim(replace(entry, **changes))

    def claims(self) -> list[ClaimEntry]:
        """Every claim, oldest first."""
        with self._lock:
            return [self._claims[r] for r in sorted(self._claims)]

    def claims_in(self, *states: ClaimState) -> list[ClaimEntry]:
        return [claim for claim in self.claims() if claim.state in states]

    def claim_by_id(self, claim_id: int) -> ClaimEntry | None:
        return next((claim for claim in self.claims() if claim.claim_id == claim_id), None)
