"""Which paid requests the gateway has taken on and served: each paid request id is served once.

A request is *claimed* (row in state `serving`, leased to the claiming process) before any compute
starts, and either *marked served* once the completion is computed, or *released* if the swarm
failed, so the customer can retry the same ticket. SQLite with `synchronous=FULL` makes every
transition durable before the gateway answers, and the primary key makes the claim atomic across
concurrent requests and even several gateway processes sharing one state folder.

The lease. Each process that opens the record is an *owner*: a random token, and an exclusive
`flock` on `owners/<token>.lock` that it holds for as long as it runs. The kernel drops that lock
when the process dies, however it dies (kill -9 included), so "is the owner of this claim still
running" is answered by trying the lock, never by a pid (a pid is reused: a claim left by a crashed
gateway whose pid now belongs to another process would stay "being served" for ever). A claim whose
owner is gone was never answered, so it is taken over at once by the next request for that ticket
(compare-and-swap on the owner), and swept at the next start. One host only, as SQLite itself.

Threads. A durable write is an fsync (about 8 ms on these machines, more under load): the gateway
makes its per-request writes (claim, mark served) on worker threads, so they never stall the event
loop that relays every open completion's tokens. The connection is shared by those threads, so
every use of it holds the record's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

DB_FILE = "served.sqlite3"
OWNERS_DIR = "owners"


P = ParamSpec("P")
R = TypeVar("R")


def _locked(
    method: Callable[Concatenate[ServedRequests, P], R],
) -> Callable[Concatenate[ServedRequests, P], R]:
    """Run `method` under the record's lock (see the module doc: the connection is shared by threads)."""

    @functools.wraps(method)
    def locked(self: ServedRequests, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


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


class ServedRequests:
    def __init__(self, state_dir: Path) -> None:
        self.owners = state_dir / OWNERS_DIR
        self.owners.mkdir(parents=True, exist_ok=True)
        self.owner = secrets.token_hex(16)
        self._lease = os.open(self._lock_path(self.owner), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(
            state_dir / DB_FILE, isolation_level=None, timeout=30.0, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS requests ("
            " request_id TEXT PRIMARY KEY, state TEXT NOT NULL, pid INTEGER NOT NULL,"
            " claimed_at REAL NOT NULL, served_at REAL, tokens INTEGER, amount TEXT, owner TEXT)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(requests)")}
        if "owner" not in columns:  # a record written before leases: its claims have no owner (gone)
            self.db.execute("ALTER TABLE requests ADD COLUMN owner TEXT")

    def _lock_path(self, owner: str) -> Path:
        return self.owners / f"{owner}.lock"

    def owner_gone(self, owner: str | None) -> bool:
        """True when no running process holds `owner`'s lease (its lock file is free or removed);
        the lock file of a gone owner is removed."""
        if owner == self.owner:
            return False
        if owner is None:
            return True
        try:
            fd = os.open(self._lock_path(owner), os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            with contextlib.suppress(FileNotFoundError):
                self._lock_path(owner).unlink()
            return True
        finally:
            os.close(fd)

    @_locked
    def release_abandoned(self) -> int:
        """Release the claims whose owner no longer runs (a gateway that crashed mid-request)."""
        owners = self.db.execute("SELECT DISTINCT owner FROM requests WHERE state = 'serving'").fetchall()
        released = 0
        for (owner,) in owners:
            if self.owner_gone(owner):
                cursor = self.db.execute(
                    "DELETE FROM requests WHERE owner IS ? AND state = 'serving'", (owner,)
                )
                released += cursor.rowcount
        return released

    @_locked
    def claim(self, request_id: str) -> Claim:
        """Claim `request_id` for this process: a new one, or one whose owner is gone (taken over
        only if that owner still holds it, so two takers cannot both win)."""
        try:
            self.db.execute(
                "INSERT INTO requests (request_id, state, pid, claimed_at, owner)"
                " VALUES (?, 'serving', ?, ?, ?)",
                (request_id, os.getpid(), time.time(), self.owner),
            )
        except sqlite3.IntegrityError:
            state, owner = self.db.execute(
                "SELECT state, owner FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            if state == "served":
                return Claim.SERVED
            if not self.owner_gone(owner):
                return Claim.SERVING
            taken = self.db.execute(
                "UPDATE requests SET owner = ?, pid = ?, claimed_at = ?"
                " WHERE request_id = ? AND state = 'serving' AND owner IS ?",
                (self.owner, os.getpid(), time.time(), request_id, owner),
            )
            return Claim.CLAIMED if taken.rowcount == 1 else Claim.SERVING
        return Claim.CLAIMED

    @_locked
    def release(self, request_id: str) -> None:
        self.db.execute(
            "DELETE FROM requests WHERE request_id = ? AND state = 'serving' AND owner = ?",
            (request_id, self.owner),
        )

    @_locked
    def mark_served(self, request_id: str, tokens: int, amount: int) -> None:
        self.db.execute(
            "UPDATE requests SET state = 'served', served_at = ?, tokens = ?, amount = ?"
            " WHERE request_id = ? AND owner = ?",
            (time.time(), tokens, str(amount), request_id, self.owner),
        )

    @_locked
    def served(self, request_id: str) -> ServedRecord | None:
        row = self.db.execute(
            "SELECT served_at, tokens, amount FROM requests WHERE request_id = ? AND state = 'served'",
            (request_id,),
        ).fetchone()
        return None if row is None else ServedRecord(request_id, row[0], row[1], int(row[2]))

    @_locked
    def count_served(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM requests WHERE state = 'served'").fetchone()[0]

    @_locked
    def close(self) -> None:
        """Close the record and end the lease (its claims were finished or released by now)."""
        self.db.close()
        with contextlib.suppress(FileNotFoundError):
            self._lock_path(self.owner).unlink()
        os.close(self._lease)
