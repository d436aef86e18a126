"""The whole network under random faults for M minutes: `pm demo` (2 workers per stage, every
daemon on the chain through the demo's RPC proxy) while offchain/demo/faults.py's random mode
plays one fault every `--every` seconds (a stage replica, a verifier or the gateway killed with
SIGKILL and restarted, or the RPC endpoint cut for 10 s), then settles, serves and claims as the
demo does and checks the invariants on what the chain holds.

Reports rounds trained, faults injected by kind, how many recovered and how long each took, and
the invariants. Targets: every fault recovered, every invariant holding.
Result: bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offchain.demo.config import DemoConfig
from offchain.demo.run import run_demo
from offchain.errors import UserError

RESULT = Path(__file__).resolve().parent / "results" / "soak.json"
MAX_ROUNDS = 10_000  # training stops at --minutes


def soak(minutes: float, every_s: float, console: Console) -> dict:
    out = Path(tempfile.mkdtemp(prefix="pm-soak-")) / "demo"
    config = DemoConfig(
        rounds=MAX_ROUNDS,
        workers_per_stage=2,
        faults=True,
        fault_every_s=every_s,
        train_minutes=minutes,
        out=out,
    )
    started = time.monotonic()
    failure = None
    try:
        run_demo(config, console)
    except UserError as error:  # a broken invariant still leaves its summary
        failure = str(error)
    if not (out / "summary.json").exists():  # the run stopped before its summary
        console.print(f"soak failed: {failure}; the run's folder is kept: {out}")
        return {"minutes": minutes, "fault_every_s": every_s, "failure": failure, "target_met": False}
    summary = json.loads((out / "summary.json").read_text())
    if failure is None:
        shutil.rmtree(out.parent)
    else:
        console.print(f"soak failed: {failure}; the run's folder is kept: {out}")
    injected = [fault for fault in summary["faults"] if fault["fault"] != "exited"]
    times = [fault["recovered_s"] for fault in injected if fault["recovered_s"] is not None]
    invariants = {invariant["name"]: invariant["holds"] for invariant in summary["invariants"]}
    recovered_all = len(times) == len(injected)
    return {
        "minutes": minutes,
        "fault_every_s": every_s,
        "seconds": round(time.monotonic() - started, 1),
        "rounds_trained": len(summary["rounds"]),
        "faults_by_kind": dict(Counter(fault["fault"] for fault in injected)),
        "faults": len(injected),
        "recovered": len(times),
        "unplanned_exits": sum(fault["fault"] == "exited" for fault in summary["faults"]),
        "recovery_s_median": round(statistics.median(times), 1) if times else None,
        "recovery_s_max": round(max(times), 1) if times else None,
        "recoveries": [
            {"fault": f["fault"], "name": f["name"], "at_s": f["at_s"], "recovered_s": f["recovered_s"]}
            for f in injected
        ],
        "invariants": invariants,
        "failure": failure,
        "target": "every injected fault recovered and every invariant holding",
        "target_met": recovered_all and all(invariants.values()) and failure is None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time under faults")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between two faults")
    args = parser.parse_args()
    console = Console(width=120)
    result = soak(args.minutes, args.every, console)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    if "rounds_trained" not in result:
        raise SystemExit(1)
    table = Table(title=f"soak: {args.minutes:g} min of training, a fault every {args.every:g} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in (
        "rounds_trained",
        "faults",
        "recovered",
        "unplanned_exits",
        "recovery_s_median",
        "recovery_s_max",
    ):
        table.add_row(key, str(result[key]))
    for kind, count in result["faults_by_kind"].items():
        table.add_row(f"  {kind}", str(count))
    for name, holds in result["invariants"].items():
        table.add_row(name, "yes" if holds else "NO")
    table.add_row("target met", str(result["target_met"]))
    console.print(table)


if __name__ == "__main__":
    main()
