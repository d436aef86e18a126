"""What a stage's data check costs next to the training it guards. Trains a spec's steps in one
process (every stage's StageTrainer, the swarm's compute) and, separately, runs the check every
stage of a swarm runs on every micro-batch a driver sends it (offchain.swarm.datagate.DataGate:
the sampler's draw, then a compare against the data set's rows, targets on the last stage) on the
same micro-batches; reports both per step and the check's share. In the swarm the check runs in a
thread beside the stage's compute, so this share is an upper bound on what it adds to a step.

Also the first check's cost on a fresh data set: it reads its shards from the store, once."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from offchain.data.dataset import Dataset
from offchain.data.shipped import shipped_dataset
from offchain.model.data import micro_batch
from offchain.model.records import NO_LEDGER, MessageHeader
from offchain.model.reference import run_step
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer
from offchain.swarm.datagate import DataGate

ROOT = Path(__file__).resolve().parents[1]
MAX_SHARE = 0.01
"""The check must not slow a step measurably: at most 1% of the compute it guards."""


def step_seconds(spec: ModelSpec, steps: int, dataset: Dataset) -> list[float]:
    """Wall time of each training step of every stage (forward, backward, optimizer), one process."""
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    times = []
    for step in range(steps):
        start = time.perf_counter()
        run_step(trainers, 0, step, 0, None, dataset, (0, NO_LEDGER))
        times.append(time.perf_counter() - start)
    return times


def check_seconds(spec: ModelSpec, steps: int, dataset: Dataset) -> list[float]:
    """Wall time of one step's checks: every stage checks every micro-batch (the last its targets too)."""
    gates = [DataGate(spec, dataset) for _ in range(spec.num_stages)]
    times = []
    for step in range(steps):
        sent = []
        for mb in range(spec.micro_batches):
            tokens, targets, source = micro_batch(spec, dataset, 0, step, mb)
            header = MessageHeader(0, 0, 0, step, mb, "forward")
            sent.append((header, source, encode_tokens(tokens, spec), encode_tokens(targets, spec)))
        start = time.perf_counter()
        for stage, gate in enumerate(gates):
            last = stage == spec.num_stages - 1
            for header, source, tokens, targets in sent:
                gate.check(header, source, tokens, targets if last else None)
        times.append(time.perf_counter() - start)
    return times


def first_check_seconds(spec: ModelSpec, dataset: Dataset) -> float:
    """One check on a data set opened afresh from the store: its shards are read and kept."""
    fresh = Dataset(dataset.store, dataset.cid)
    tokens, targets, source = micro_batch(spec, dataset, 0, 0, 0)
    header = MessageHeader(0, 0, 0, 0, 0, "forward")
    start = time.perf_counter()
    DataGate(spec, fresh).check(header, source, encode_tokens(tokens, spec), encode_tokens(targets, spec))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", help="spec file (repeatable); default tiny and small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "datagate.json"))
    args = parser.parse_args()
    report = {}
    for path in args.spec or [ROOT / "specs" / "tiny.json", ROOT / "specs" / "small.json"]:
        spec = load_spec(path)
        dataset = shipped_dataset(spec.manifest_cid)
        first = first_check_seconds(spec, dataset)
        train = statistics.median(step_seconds(spec, args.steps, dataset)[1:])  # the first step warms up
        check = statistics.median(check_seconds(spec, args.steps, dataset))
        report[spec.name] = {
            "check_share_of_step": check / train,
            "check_seconds_per_step": check,
            "step_seconds": train,
            "first_check_seconds": first,
            "check_seconds_per_micro_batch_per_stage": check / (spec.num_stages * spec.micro_batches),
            "stages": spec.num_stages,
            "micro_batches_per_step": spec.micro_batches,
            "tokens_per_micro_batch": spec.micro_batch_size * spec.context,
            "target": f"checks <= {MAX_SHARE:.0%} of a training step",
            "target_met": check / train <= MAX_SHARE,
        }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'spec':<8}{'step (all stages)':>19}{'checks per step':>17}{'share':>8}{'first check':>13}")
    for name, row in report.items():
        print(
            f"{name:<8}{row['step_seconds'] * 1e3:>16.1f} ms{row['check_seconds_per_step'] * 1e3:>14.2f} ms"
            f"{row['check_share_of_step']:>8.2%}{row['first_check_seconds'] * 1e3:>10.1f} ms"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
