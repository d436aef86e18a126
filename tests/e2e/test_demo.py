"""`pm demo --rounds 2 --cheater`: first interrupted with Ctrl-C once training runs (nothing may stay
running, no port may stay taken), then run again into the same --out to the end, and its
summary.json checked against the protocol's rules and the store it leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offchain.paths import REPO
from offchain.storage.crypto import StageKey, decrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore

pytestmark = pytest.mark.slow
DEMO = [sys.executable, "-m", "offchain.cli", "demo", "--rounds", "2", "--cheater"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo") / "out"


def demo(out: Path, stdout: Path) -> subprocess.Popen:
    with open(stdout, "wb") as sink:
        return subprocess.Popen(
            [*DEMO, "--out", str(out)], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy()
        )


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_every_process_and_frees_every_port(out, tmp_path):
    log = tmp_path / "interrupted.txt"
    run = demo(out, log)
    try:
        deadline = time.monotonic() + 600
        while "$ pm driver run" not in log.read_text():  # chain, workers, verifiers, gateway all up
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        ports = [int(re.search(r"anvil at http://127\.0\.0\.1:(\d+)", text)[1])]
        ports.append(int(re.search(r"gateway run .*--port (\d+)", text)[1]))
        assert all(listening(port) for port in ports)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    assert "interrupted; every process it started has been stopped" in log.read_text()
    assert processes_mentioning(str(out)) == []
    assert not any(listening(port) for port in ports)
    brownie_networks = (Path.home() / ".brownie" / "network-config.yaml").read_text()
    assert f"pm-31337-{ports[0]}" not in brownie_networks


@pytest.fixture(scope="module")
def summary(out, tmp_path_factory) -> dict:
    """The full run, into the --out folder the interrupted run used (the second run on this machine)."""
    log = tmp_path_factory.mktemp("demo-log") / "demo.txt"
    run = demo(out, log)
    try:
        assert run.wait(timeout=900) == 0, log.read_text()[-5000:]
    finally:
        if run.poll() is None:
            run.kill()
    assert processes_mentioning(str(out)) == []
    return json.loads((out / "summary.json").read_text())


def test_every_honest_claim_finalized_and_the_cheater_slashed(summary):
    cheaters = [worker for worker in summary["workers"] if worker["cheat"]]
    honest = [worker for worker in summary["workers"] if not worker["cheat"]]
    assert len(cheaters) == 1 and len(honest) == 3
    trained = [entry["round"] for entry in summary["rounds"]]
    assert len(trained) == 2
    claims = summary["claims"]["list"]
    by_worker = {
        worker["address"]: [c for c in claims if c["worker"] == worker["address"]] for worker in honest
    }
    for worker in honest:
        assert sorted(c["round"] for c in by_worker[worker["address"]]) == trained
        assert {c["state"] for c in by_worker[worker["address"]]} == {"finalized"}
        assert int(worker["slashed_wei"]) == 0
    (cheater,) = cheaters
    theirs = [c for c in claims if c["worker"] == cheater["address"]]
    assert theirs and all(c["state"] == "rejected" and c["challenged"] for c in theirs)
    assert int(cheater["slashed_wei"]) > 0 and int(cheater["shares"]) == 0
    assert summary["claims"]["rejected"] == len(theirs) and summary["claims"]["pending"] == 0
    assert int(summary["slashed_wei"]) == int(cheater["slashed_wei"])


def test_shares_are_finalized_work_units_times_the_rate(summary):
    rate = int(summary["shares_per_work_unit"])
    claims = summary["claims"]["list"]
    for worker in summary["workers"]:
        finalized = [c for c in claims if c["worker"] == worker["address"] and c["state"] == "finalized"]
        assert int(worker["shares"]) == sum(c["work_units"] for c in finalized) * rate
        assert sum(int(c["shares_minted"]) for c in finalized) == int(worker["shares"])
    assert sum(worker["percent_of_supply"] for worker in summary["workers"]) == pytest.approx(100)


def test_revenue_paid_was_split_and_claimed_to_the_wei(summary):
    revenue = summary["revenue"]
    paid = int(revenue["paid_wei"])
    assert paid > 0 and revenue["payments"] == len(summary["completions"])
    parts = int(revenue["to_holders_wei"]) + int(revenue["to_operator_wei"]) + int(revenue["to_protocol_wei"])
    assert parts == paid
    holders = [worker for worker in summary["workers"] if int(worker["shares"]) > 0]
    claimed = int(revenue["claimed_wei"])
    remaining = sum(int(worker["claimable_wei"]) for worker in summary["workers"])
    assert 0 <= int(revenue["to_holders_wei"]) - (claimed + remaining) <= len(holders)
    assert claimed == sum(int(worker["revenue_claimed_wei"]) for worker in summary["workers"]) > 0
    for worker in holders:
        assert int(worker["revenue_claimed_wei"]) == int(worker["revenue_received_wei"]) > 0


def test_every_checkpoint_and_trace_is_in_the_store_and_decrypts(summary, out):
    store = EmbeddedStore(out / "store")
    assert summary["checkpoints"]
    for checkpoint in summary["checkpoints"]:
        stage = checkpoint["stage"]
        (key_file, *_) = sorted((out / "state").glob(f"worker-s{stage}-*/stage-key-*"))
        key = StageKey(summary["model_id"], stage, key_file.read_bytes())
        state = decrypt_checkpoint(key, store.get(checkpoint["cid"]))
        assert "0x" + hashlib.sha256(state).hexdigest() == checkpoint["digest"]
        assert decrypt_checkpoint(key, store.get(checkpoint["trace_cid"]))
    assert store.get(summary["spec_cid"])


def test_the_customer_got_its_completions(summary, out):
    completions = summary["completions"]
    assert len(completions) >= 2
    for completion in completions:
        assert completion["prompt"] and completion["text"]
        assert re.fullmatch(r"0x[0-9a-f]{64}", completion["request_id"])
        assert re.fullmatch(r"(0x)?[0-9a-f]{64}", completion["tx"])
    assert len({completion["request_id"] for completion in completions}) == len(completions)
    assert summary["chain_id"] == 31337
    assert set(summary["contracts"]) >= {"ModelRegistry", "RevenueRouter", "WorkLedger"}
    assert all({"round", "loss", "tokens"} <= set(entry) for entry in summary["rounds"])
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
