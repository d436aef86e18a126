"""`pm demo --faults --rounds 3` (2 workers per stage, 1 on stage 0): every fault
offchain/demo/faults.py injects is restarted and recovered, the run exits 0 with every invariant
holding, and nothing is left running. Stage 0's only worker, killed after storing round 2 and before
claiming it, claims round 2 exactly once after its restart and trains on. Its own run (not the
cheater's of test_demo.py: with three replicas on the cheater's stage the driver may give the
cheater no micro-batch, and then nothing of its lie to catch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_demo import INVARIANTS, processes_mentioning, rounds_of

from offchain.paths import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
INJECTED = {
    "kill -9 mid-round (round 1)": "worker-s2-1",
    "kill the only worker of stage 0 between publish and claim (round 2)": "worker-s0-0",
    "kill mid-replay": "verifier-s2-0",
    "RPC endpoint cut for 10s": "rpc endpoint",
    "kill mid-request": "gateway",
}


def test_every_injected_fault_recovers_and_every_invariant_holds(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "offchain.cli", "demo", "--faults", "--rounds", "3", "--out", str(out)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert processes_mentioning(str(out)) == []
    summary = json.loads((out / "summary.json").read_text())
    faults = {fault["fault"]: fault for fault in summary["faults"]}
    assert {kind: fault["name"] for kind, fault in faults.items()} == INJECTED
    for fault in faults.values():
        assert fault["recovered_s"] is not None and fault["recovered_s"] > 0, fault
        assert fault["restarted"] == (fault["name"] != "rpc endpoint"), fault
    assert [invariant["name"] for invariant in summary["invariants"] if invariant["holds"]] == INVARIANTS
    (sole,) = [worker for worker in summary["workers"] if worker["stage"] == 0]
    assert sole["name"] == "worker-s0-0"
    killed = faults["kill the only worker of stage 0 between publish and claim (round 2)"]
    assert killed["stage"] == 0 and "stage 0 has no live worker" in killed["effect"], killed
    stage0 = [claim for claim in summary["claims"]["list"] if claim["stage"] == 0]
    round2 = [(claim["worker"], claim["state"]) for claim in stage0 if 2 in rounds_of(claim)]
    assert round2 == [(sole["address"], "finalized")], stage0  # one claim of round 2 on the chain
    trained = [entry["round"] for entry in summary["rounds"]]
    assert trained == [1, 2, 3] and sole["rounds"] == trained, stage0  # it trained on after its restart
    assert len(summary["completions"]) == summary["revenue"]["payments"] == 3  # the retried ticket paid once
    assert "faults (the network rode them out)" in run.stdout and "invariants (read back" in run.stdout
