"""A worker's claim journal: what it stored, what it claimed and what the chain did with it, kept on
disk so a restarted worker (even after kill -9) never claims a round twice nor forgets one.

Two kinds of files, each written atomically (offchain/durable.py):
- `round-<swarm round>.json`: one published round (checkpoint and trace stored), the digests of
  the states it really started from and ended at (a round that can never be claimed, because it
  does not follow the lane's tip, is DROPPED);
- `claim-<first swarm round>.json`: one claim, covering consecutive published rounds, with its
  manifest. A claim moves PREPARED (manifest stored, not sent) -> SENDING (written before the
  transaction goes out) -> SUBMITTED (claim id known) -> FINALIZED, REJECTED or VOIDED (a
  rejection of an earlier claim of the lane voided it); a PREPARED claim that no longer follows
  the lane's tip when its turn comes is ABANDONED and its rounds are free again.

A round belongs to at most one claim in play: a claim file is the one write that takes rounds, so a
crash either took them or did not. A SENDING claim found after a restart may or may not have
reached the chain: the worker looks it up (by its manifest CID) before anything else.

Settled entries move to `settled/` (a finalized, rejected or voided claim with its rounds, an
abandoned claim without them, a dropped round), so a worker that has trained for months loads and
scans only what is still in play. The claim's settled copy is written first, its rounds moved, the
active file removed last: a crash in between leaves an entry that the next pass settles again.
"""

from __future__ import annotations

import json
import os
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
    """The rounds and claims of one (model, stage) of this worker still in play, kept in `directory`
    (settled ones in `directory`/settled); thread-safe: the commit hook adds rounds while the ledger
    loop moves claims along."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.settled = directory / "settled"
        self.settled.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rounds = {e.round: e for e in _load(directory, "round-*.json", RoundEntry.from_json)}
        self._claims = {e.swarm_rounds[0]: e for e in _load(directory, "claim-*.json", ClaimEntry.from_json)}

    def _write(self, name: str, document: dict[str, Any]) -> None:
        write_atomic(self.directory / name, json.dumps(document, indent=1).encode())

    def _write_settled(self, name: str, document: dict[str, Any]) -> None:
        write_atomic(self.settled / name, json.dumps(document, indent=1).encode())

    # ---- rounds -------------------------------------------------------------------------------

    @staticmethod
    def _round_file(swarm_round: int) -> str:
        return f"round-{swarm_round:012d}.json"

    def put_round(self, entry: RoundEntry) -> RoundEntry:
        """Write `entry` durably (replacing the round's previous entry) before returning it."""
        with self._lock:
            self._write(self._round_file(entry.round), entry.to_json())
            self._rounds[entry.round] = entry
        return entry

    def drop_round(self, entry: RoundEntry) -> RoundEntry:
        """The round can never be claimed: settled as DROPPED."""
        entry = replace(entry, status=RoundStatus.DROPPED)
        with self._lock:
            self._write_settled(self._round_file(entry.round), entry.to_json())
            (self.directory / self._round_file(entry.round)).unlink(missing_ok=True)
            self._rounds.pop(entry.round, None)
        return entry

    def round(self, swarm_round: int) -> RoundEntry | None:
        with self._lock:
            return self._rounds.get(swarm_round)

    def rounds(self) -> list[RoundEntry]:
        """Every published round still in play, oldest first."""
        with self._lock:
            return [self._rounds[r] for r in sorted(self._rounds)]

    def claim_of_round(self, swarm_round: int) -> ClaimEntry | None:
        """The claim in play that covers a swarm round, if any."""
        return next((claim for claim in self.claims() if swarm_round in claim.swarm_rounds), None)

    def unclaimed_rounds(self) -> list[RoundEntry]:
        """Published rounds in play that no claim in play covers, oldest first."""
        taken = {r for claim in self.claims() for r in claim.swarm_rounds}
        return [entry for entry in self.rounds() if entry.round not in taken]

    # ---- claims -------------------------------------------------------------------------------

    def put_claim(self, entry: ClaimEntry) -> ClaimEntry:
        """Write `entry` durably before returning it; a settled claim leaves the set in play, with
        its rounds unless it was abandoned (they are free again)."""
        name = f"claim-{entry.swarm_rounds[0]:012d}.json"
        with self._lock:
            if not entry.state.terminal:
                self._write(name, entry.to_json())
                self._claims[entry.swarm_rounds[0]] = entry
                return entry
            self._write_settled(name, entry.to_json())
            if entry.state is not ClaimState.ABANDONED:
                for swarm_round in entry.swarm_rounds:
                    if self._rounds.pop(swarm_round, None) is not None:
                        os.replace(
                            self.directory / self._round_file(swarm_round),
                            self.settled / self._round_file(swarm_round),
                        )
            (self.directory / name).unlink(missing_ok=True)
            self._claims.pop(entry.swarm_rounds[0], None)
        return entry

    def update_claim(self, entry: ClaimEntry, **changes: Any) -> ClaimEntry:
        return self.put_claim(replace(entry, **changes))

    def claims(self) -> list[ClaimEntry]:
        """Every claim still in play, oldest first."""
        with self._lock:
            return [self._claims[r] for r in sorted(self._claims)]

    def claims_in(self, *states: ClaimState) -> list[ClaimEntry]:
        return [claim for claim in self.claims() if claim.state in states]

    def claim_by_id(self, claim_id: int) -> ClaimEntry | None:
        return next((claim for claim in self.claims() if claim.claim_id == claim_id), None)
