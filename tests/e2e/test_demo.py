"""`pm demo --rounds 3 --cheater`: first interrupted with Ctrl-C once training runs (nothing may stay
running, no port may stay taken); then killed with SIGKILL once its workers run (its children
outlive it); then run again into the same --out to the end (it must stop those leftovers first),
and its summary.json checked against the protocol's rules and the store it leaves behind: every
round claimed while training ran, the cheater's lie (round 2) slashed once and its round-3 claim,
chained on the lie, voided with it; a validator killed mid-run told and ridden out, and every
invariant holding. (`pm demo --faults`: test_demo_faults.py.)"""

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
from offchain.proofs.manifest import ClaimManifest
from offchain.storage.crypto import decrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.keyshare import StageKeyring, StageKeyUnavailable, key_for_checkpoint

pytestmark = pytest.mark.slow
DEMO = [sys.executable, "-m", "offchain.cli", "demo", "--rounds", "3", "--cheater"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo") / "out"


def demo(out: Path, stdout: Path, *extra: str, command: list[str] = DEMO) -> subprocess.Popen:
    with open(stdout, "wb") as sink:
        return subprocess.Popen(
            [*command, *extra, "--out", str(out)],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
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


def test_a_stage_whose_only_worker_is_gone_stops_the_run_naming_it(tmp_path):
    """worker-s2-0, stage 2's only worker, killed with SIGKILL once the driver runs and not restarted:
    after --stage-grace the demo stops in one line naming the stage, and stops everything else."""
    out, log = tmp_path / "out", tmp_path / "stage-gone.txt"
    run = demo(out, log, "--stage-grace", "5", command=DEMO[:6])  # no cheater: one worker per stage
    try:
        deadline = time.monotonic() + 600
        while "$ pm driver run" not in log.read_text():
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        ports = [int(re.search(r"anvil at http://127\.0\.0\.1:(\d+)", text)[1])]
        ports.append(int(re.search(r"gateway run .*--port (\d+)", text)[1]))
        kill9_child(out, "worker-s2-0.key")
        assert run.wait(timeout=300) == 1, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    assert "worker-s2-0 exited with code -9: stage 2 has no live worker" in text
    last = text.strip().splitlines()[-1]  # pm demo's last word: the one error line
    assert last.startswith("stage 2 has had no live worker for 5s (worker-s2-0 exited): the run cannot go on")
    assert processes_mentioning(str(out)) == []
    assert not any(listening(port) for port in ports)


def test_an_unreachable_kubo_is_refused_before_anything_starts(tmp_path):
    """Workers never claim a round validators cannot fetch, so with the daemon down nothing could be
    claimed: the demo says so in one line instead of training into a spool."""
    run = subprocess.run(
        [*DEMO[:4], "--rounds", "1", "--ipfs-api", "http://127.0.0.1:1", "--out", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert "--ipfs-api: the Kubo RPC at http://127.0.0.1:1: cannot connect" in line and "ipfs daemon" in line
    assert "anvil at" not in run.stdout and processes_mentioning(str(tmp_path / "out")) == []


@pytest.fixture(scope="module")
def killed_anvil_ports() -> list[int]:
    return []


def test_sigkill_leaves_children_that_the_next_run_stops(out, tmp_path, killed_anvil_ports):
    log = tmp_path / "killed.txt"
    run = demo(out, log)
    try:
        deadline = time.monotonic() + 600
        while "$ pm worker run --model 1 --stage 1" not in log.read_text():
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        run.kill()  # no finally runs in pm demo: its children keep running
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    killed_anvil_ports.append(int(re.search(r"anvil at http://127\.0\.0\.1:(\d+)", log.read_text())[1]))
    assert processes_mentioning(str(out)) and listening(killed_anvil_ports[0])


def kill9_child(out: Path, mentioning: str) -> None:
    """SIGKILL the process group of the demo's child whose command line mentions `mentioning`."""
    for line in (out / "pids").read_text().splitlines():
        pid, cmdline = line.split("\t")
        if mentioning.encode() in bytes.fromhex(cmdline):
            os.killpg(int(pid), signal.SIGKILL)
            return
    raise AssertionError(f"no child of the demo mentions {mentioning}")


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-log") / "demo.txt"


@pytest.fixture(scope="module")
def summary(out, log, killed_anvil_ports) -> dict:
    """The full run, into the --out folder the earlier runs used: it stops what the killed run left.
    Once training runs, stage 0's only validator is killed (kill -9) and not restarted: the run
    goes on (that stage's claims finalize unchecked once their window passes) and says so."""
    run = demo(out, log)
    try:
        deadline = time.monotonic() + 600
        while "$ pm driver run" not in log.read_text():
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        kill9_child(out, "verifier-s0-0.key")
        assert run.wait(timeout=900) == 0, log.read_text()[-5000:]
    finally:
        if run.poll() is None:
            run.kill()
    assert processes_mentioning(str(out)) == []
    assert not any(listening(port) for port in killed_anvil_ports)
    return json.loads((out / "summary.json").read_text())


def test_a_dead_validator_is_told_in_one_line_and_the_run_goes_on(summary, log):
    (fault,) = summary["faults"]
    assert (fault["fault"], fault["name"], fault["stage"], fault["exit_code"]) == (
        "exited",
        "verifier-s0-0",
        0,
        -9,
    )
    assert (
        fault["effect"] == "stage 0 has no live validator: its claims finalize unchecked after their window"
    )
    assert not fault["restarted"] and fault["recovered_s"] is None
    text = log.read_text()
    assert "verifier-s0-0 exited with code -9: stage 0 has no live validator" in text
    assert "faults (the network rode them out)" in text


INVARIANTS = [
    "no round claimed twice",
    "no round lost",
    "shares = finalized work units x rate",
    "revenue paid = holders + fees",
    "claimed + claimable = holders' part (1 wei per holder)",
]


def test_every_invariant_holds_and_is_printed(summary, log):
    assert [invariant["name"] for invariant in summary["invariants"] if invariant["holds"]] == INVARIANTS
    assert "invariants (read back from the chain)" in log.read_text()


def rounds_of(claim: dict) -> list[int]:
    return list(range(claim["first_round"], claim["last_round"] + 1))


def test_every_honest_claim_finalized_and_the_cheater_slashed_once_with_a_cascade(summary):
    cheaters = [worker for worker in summary["workers"] if worker["cheat"]]
    honest = [worker for worker in summary["workers"] if not worker["cheat"]]
    assert len(cheaters) == 1 and len(honest) == 3
    trained = [entry["round"] for entry in summary["rounds"]]
    assert trained == [1, 2, 3]
    claims = summary["claims"]["list"]
    for worker in honest:
        mine = [c for c in claims if c["worker"] == worker["address"]]
        assert sorted(r for c in mine for r in rounds_of(c)) == trained
        assert {c["state"] for c in mine} == {"finalized"} and worker["rounds"] == trained
        assert int(worker["slashed_wei"]) == 0
    (cheater,) = cheaters
    theirs = {c["first_round"]: c for c in claims if c["worker"] == cheater["address"]}
    assert theirs[1]["state"] == "finalized", "its honest round 1 earns like any other"
    assert theirs[2]["state"] == "rejected" and theirs[2]["challenged"], "the lie about round 2"
    assert theirs[3]["state"] == "voided" and theirs[3]["previous_claim_id"] == theirs[2]["claim_id"]
    assert (cheater["slashes"], cheater["voided_claims"], cheater["voided_rounds"]) == (1, 1, [3])
    assert int(cheater["slashed_wei"]) == int(summary["slashed_wei"]) > 0 and summary["slashes"] == 1
    (cascade,) = summary["cascades"]
    assert (cascade["rejected_claim_id"], cascade["voided_claims"]) == (theirs[2]["claim_id"], 1)
    counts = summary["claims"]
    assert (counts["rejected"], counts["voided"], counts["pending"]) == (1, 1, 0)
    for entry in summary["rounds"][:-1]:  # the last round's claims may land as training ends
        assert entry["claims"]["claimed_while_training"] == entry["claims"]["claimed"] == 4


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


def _opened(store: EmbeddedStore, keyrings: list[StageKeyring], cid: str) -> bytes:
    """Decrypted with the stage key its header names (a slash makes a stage rotate its key)."""
    for keyring in keyrings:
        try:
            return decrypt_checkpoint(key_for_checkpoint(keyring, store, cid), store.get(cid))
        except StageKeyUnavailable:
            continue
    raise AssertionError(f"no member of the stage holds the key of {cid}")


def test_every_checkpoint_and_trace_is_in_the_store_and_decrypts(summary, out):
    store = EmbeddedStore(out / "store")
    assert len(summary["checkpoints"]) == 3 * 3 + 1, "every round of every finalized claim"
    for checkpoint in summary["checkpoints"]:
        manifest = ClaimManifest.from_bytes(store.get(checkpoint["manifest_cid"]))
        assert manifest.record(checkpoint["round"]).checkpoint_cid == checkpoint["cid"]
        stage, model_id = checkpoint["stage"], summary["model_id"]
        keyrings = [
            StageKeyring(path, model_id, stage)
            for path in (out / "state").glob(f"worker-s{stage}-*/stage-keys-model{model_id}-stage{stage}")
        ]
        state = _opened(store, keyrings, checkpoint["cid"])
        assert "0x" + hashlib.sha256(state).hexdigest() == checkpoint["digest"]
        assert _opened(store, keyrings, checkpoint["trace_cid"])
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
