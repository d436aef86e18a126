"""The verifier's journal: what it has decided and done per claim, written atomically after every
change, so a verifier killed at any point resumes where it was.

Between two journal writes there is at most one chain action, and every action is preceded by a
chain check (status, deadline, the validator's own VoteCast), so a crash after a transaction but
before its journal entry never repeats it. A claim whose verdict is not journaled yet (killed
mid-replay) is simply replayed again after the restart, up to MAX_REPLAYS times: content that
kills the process at every replay gets a verdict (undecided) instead of a crash loop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from offchain.durable import write_atomic
from offchain.verifier.check import SubmittedClaim, Verdict

MAX_REPLAYS = 3
"""Replays of one claim that may start without finishing (the process died) before it is given up."""


@dataclass
class Entry:
    """One claim's progress. rounds: the rounds this verifier drew for checking (drawn once, kept
    across restarts; empty = not sampled); verdict: its judgment (of those rounds, or of the dispute
    it votes on); voted / vote_settled: its vote is on-chain (or the dispute opened before this
    validator could vote: no vote to send) / its vote bond was released; replays: replays started
    and not finished; done: the claim is settled (finalized, rejected or voided); finalized: the
    chain finalized it (its checkpoint became the stage's)."""

    claim: SubmittedClaim
    rounds: list[int]
    verdict: Verdict | None = None
    voted: bool = False
    vote_settled: bool = False
    replays: int = 0
    done: bool = False
    finalized: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.to_json() if self.verdict else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        verdict = Verdict.from_json(data["verdict"]) if data["verdict"] else None
        fields = {k: data[k] for k in ("rounds", "voted", "vote_settled", "replays", "done", "finalized")}
        return cls(SubmittedClaim(**data["claim"]), verdict=verdict, **fields)


@dataclass
class Journal:
    path: Path
    entries: dict[int, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Journal:
        if not path.is_file():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, {int(k): Entry.from_json(v) for k, v in data["entries"].items()})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"entries": {str(k): entry.to_json() for k, entry in self.entries.items()}}
        write_atomic(self.path, json.dumps(document, sort_keys=True).encode())

    def open_entries(self) -> list[Entry]:
        return [entry for _, entry in sorted(self.entries.items()) if not entry.done]
