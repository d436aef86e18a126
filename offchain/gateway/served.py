"""Which paid requests the gateway has taken on and served: each paid request id is served once.

A request is *claimed* (row in state `serving`, with the claiming process's pid) before any
compute starts, and either *marked served* once the completion is computed, or *released* if
the swarm failed, so the customer can retry the same ticket. SQLite with `synchronous=FULL`
makes every transition durable before the gateway answers, and the primary key makes the claim
atomic across concurrent requests and even several gateway processes sharing one state folder.
Claims left by a process that is gone (a crash mid-request) are released at the next start:
that request was never answered, so its customer may retry.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

DB_FILE = "served.sqlite3"


class Claim(Enum):
    CLAIMED = "claimed"
    SERVING = "serving"  # another request with the same id is being computed right now
    SERVED = "served"


@dataclass(frozen=True)
class ServedRecord:
    request_id: str
    served_at: float
    tokens: int
    amount: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServedRequests:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state_dir / DB_FILE, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS requests ("
            " request_id TEXT PRIMARY KEY, state TEXT NOT NULL, pid INTEGER NOT NULL,"
            " claimed_at REAL NOT NULL, served_at REAL, tokens INTEGER, amount TEXT)"
        )

    def release_abandoned(self) -> int:
        """Release the claims of processes that no longer run (and any under this pid, reused)."""
        rows = self.db.execute("SELECT request_id, pid FROM requests WHERE state = 'serving'").fetchall()
        stale = [(rid,) for rid, pid in rows if pid == os.getpid() or not _alive(pid)]
        self.db.executemany("DELETE FROM requests WHERE request_id = ? AND state = 'serving'", stale)
        return len(stale)

    def claim(self, request_id: str) -> Claim:
        try:
            self.db.execute(
                "INSERT INTO requests (request_id, state, pid, claimed_at) VALUES (?, 'serving', ?, ?)",
                (request_id, os.getpid(), time.time()),
            )
        except sqlite3.IntegrityError:
            (state,) = self.db.execute(
                "SELECT state FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            return Claim.SERVED if state == "served" else Claim.SERVING
        return Claim.CLAIMED

    def release(self, request_id: str) -> None:
        self.db.execute("DELETE FROM requests WHERE request_id = ? AND state = 'serving'", (request_id,))

    def mark_served(self, request_id: str, tokens: int, amount: int) -> None:
        self.db.execute(
            "UPDATE requests SET state = 'served', served_at = ?, tokens = ?, amount = ?"
            " WHERE request_id = ?",
            (time.time(), tokens, str(amount), request_id),
        )

    def served(self, request_id: str) -> ServedRecord | None:
        row = self.db.execute(
            "SELECT served_at, tokens, amount FROM requests WHERE request_id = ? AND state = 'served'",
            (request_id,),
        ).fetchone()
        return None if row is None else ServedRecord(request_id, row[0], row[1], int(row[2]))

    def count_served(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM requests WHERE state = 'served'").fetchone()[0]

    def close(self) -> None:
        self.db.close()
