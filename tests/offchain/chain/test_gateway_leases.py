"""The gateway's served-request record under faults (no chain needed): a claim is leased to a
running process, so a gateway that dies mid-request never leaves its ticket stuck as "being
served" (whatever happens to its pid afterwards), a live one is never robbed, and a ticket
claimed at the same moment by many callers is claimed once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from offchain.gateway.served import DB_FILE, Claim, ServedRequests

RID = "0x" + "ab" * 32
ROOT = Path(__file__).resolve().parents[3]


def crash_while_serving(state_dir: Path) -> int:
    """A real process claims RID and dies as under kill -9 (no cleanup); returns its pid."""
    script = (
        "import os, sys; from pathlib import Path; from offchain.gateway.served import ServedRequests;"
        f"served = ServedRequests(Path(sys.argv[1])); assert served.claim({RID!r}).value == 'claimed';"
        "print(os.getpid(), flush=True); os._exit(137)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(state_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert run.returncode == 137, run.stderr
    return int(run.stdout)


def test_a_claim_left_by_a_dead_gateway_is_taken_over_even_when_its_pid_is_reused(tmp_path):
    dead_pid = crash_while_serving(tmp_path)
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        (pid,) = db.execute("SELECT pid FROM requests WHERE request_id = ?", (RID,)).fetchone()
        assert pid == dead_pid
        # The pid now belongs to a live process (this one): liveness must not be read from it.
        db.execute("UPDATE requests SET pid = ? WHERE request_id = ?", (os.getpid(), RID))
    retry = ServedRequests(tmp_path)
    try:
        assert retry.claim(RID) is Claim.CLAIMED  # at once, no restart or sweep needed
        retry.mark_served(RID, tokens=4, amount=10)
        assert retry.claim(RID) is Claim.SERVED
        assert retry.served(RID).tokens == 4 and retry.count_served() == 1
        assert [path.name for path in (tmp_path / "owners").iterdir()] == [f"{retry.owner}.lock"]
    finally:
        retry.close()
    assert not list((tmp_path / "owners").iterdir())


def test_a_restart_sweeps_dead_claims_and_never_a_live_one_sharing_its_pid(tmp_path):
    crash_while_serving(tmp_path)
    live = ServedRequests(tmp_path)  # a gateway serving right now, in this very process
    other = "0x" + "cd" * 32
    try:
        assert live.claim(other) is Claim.CLAIMED
        restarted = ServedRequests(tmp_path)  # same pid as `live`: a pid check would free its claim
        try:
            assert restarted.release_abandoned() == 1  # the dead process's claim only
            assert restarted.claim(other) is Claim.SERVING
            assert restarted.claim(RID) is Claim.CLAIMED
            restarted.release(other)  # not its claim: nothing happens
            assert live.claim(other) is Claim.SERVING
        finally:
            restarted.close()
        assert live.claim(RID) is Claim.CLAIMED  # `restarted` closed without finishing: gone
    finally:
        live.close()


def test_a_ticket_redeemed_by_many_callers_at_once_is_claimed_once(tmp_path):
    callers = 8
    start, results = threading.Barrier(callers), []

    def redeem() -> None:
        served = ServedRequests(tmp_path)  # a caller of its own: its lease, its connection
        try:
            start.wait()
            results.append(served.claim(RID))
            start.wait()  # every caller still running: a closed one's claim would be free again
        finally:
            served.close()

    threads = [threading.Thread(target=redeem) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(result.value for result in results) == ["claimed"] + ["serving"] * (callers - 1)


def test_claims_recorded_before_leases_are_released(tmp_path):
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute(
            "CREATE TABLE requests (request_id TEXT PRIMARY KEY, state TEXT NOT NULL, pid INTEGER NOT NULL,"
            " claimed_at REAL NOT NULL, served_at REAL, tokens INTEGER, amount TEXT)"
        )
        db.execute("INSERT INTO requests VALUES (?, 'serving', 1, 0, NULL, NULL, NULL)", (RID,))
    served = ServedRequests(tmp_path)
    try:
        assert served.release_abandoned() == 1 and served.claim(RID) is Claim.CLAIMED
    finally:
        served.close()
