"""Swarm throughput and wire codecs over an emulated WAN, measured side by side in one run.

1. tokens/s of the small spec trained in ONE process (reference.run_step: every stage, the same
   bytes the swarm exchanges) vs the 3-stage swarm on loopback (3 `pm worker run` processes, the
   driver in this process). Target: swarm >= 50% of single-process tokens/s.
2. Per codec, over the swarm with the driver's transport shaped to --bandwidth-mbit and
   --latency-ms per message: bytes/token per boundary and direction, and the wall time until the
   smoothed training loss reaches the dense run's final loss (same batches for every codec;
   compressed codecs may train up to twice as many steps to get there).
   Target: compressed codecs reach it in less wall time than dense.
Workers and single-process runs never overlap, so each measurement gets the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from offchain.model.reference import run_step
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.trainer import StageTrainer
from offchain.swarm.identity import Identity
from offchain.swarm.local import LOCAL_KEY, ROOT, LocalProcess, spawn_pm, worker_args
from offchain.swarm.node import NetworkConfig
from offchain.swarm.run import run_driver
from offchain.swarm.shaping import Shaping

CODECS = {
    "dense": {"name": "dense"},
    "fp16": {"name": "fp16"},
    "int8": {"name": "int8", "block_size": 64},
    "subspace": {"name": "subspace", "k": 64, "coordinates": "int8", "block_size": 64},
}
SMOOTH = 5  # steps in the trailing mean that decides "reached the dense loss"


def single_process_tokens_per_second(spec: ModelSpec, steps: int) -> dict:
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    run_step(trainers, 0, 0)  # warm-up: allocator, first-touch
    started = time.perf_counter()
    for step in range(1, steps + 1):
        run_step(trainers, step // spec.round_steps, step % spec.round_steps)
    seconds = time.perf_counter() - started
    return {"steps": steps, "seconds": seconds, "tokens_per_second": steps * spec.tokens_per_step / seconds}


def swarm_run(
    spec: ModelSpec,
    shaping: Shaping,
    workdir: Path,
    rounds: int,
    target: float | None = None,
    max_rounds: int = 0,
) -> dict:
    """Start one fresh worker per stage in `workdir`, train `rounds` rounds from the seed, then (with
    a `target` loss) one more round at a time until it is reached or `max_rounds`; stop the workers."""
    workdir.mkdir(parents=True)
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    workers: list[LocalProcess] = []
    try:
        first = spawn_pm("stage0", worker_args(spec_path, 0, workdir), workdir)
        workers.append(first)
        boot = first.maddr()
        for stage in range(1, spec.num_stages):
            workers.append(spawn_pm(f"stage{stage}", worker_args(spec_path, stage, workdir, [boot]), workdir))
        for worker in workers:
            worker.maddr()
        network = NetworkConfig(initial_peers=(boot,))
        identity = Identity.from_key(LOCAL_KEY)
        summary = asyncio.run(run_driver(spec, identity, network, rounds=rounds, shaping=shaping))
        while (
            target is not None
            and time_to_loss(summary, target) is None
            and len(summary["rounds"]) < max_rounds
        ):
            more = asyncio.run(run_driver(spec, identity, network, rounds=1, shaping=shaping))
            summary["rounds"] += more["rounds"]
            for key in ("steps", "tokens", "training_seconds"):
                summary[key] += more[key]
            summary["tokens_per_second"] = summary["tokens"] / summary["training_seconds"]
        return summary
    finally:
        for worker in workers:
            worker.stop()


def time_to_loss(summary: dict, target: float) -> float | None:
    """Wall seconds of training until the trailing mean of `_window` step losses is <= target."""
    losses, times, offset = [], [], 0.0
    for round_ in summary["rounds"]:
        losses += round_["losses"]
        times += [offset + seconds for seconds in round_["step_seconds"]]
        offset += round_["seconds"]
    window = _window(summary)
    for index in range(window - 1, len(losses)):
        if sum(losses[index - window + 1 : index + 1]) / window <= target:
            return times[index]
    return None


def _window(summary: dict) -> int:
    """SMOOTH steps, or a whole round when rounds are shorter."""
    return min(SMOOTH, len(summary["rounds"][0]["losses"]))


def _final_loss(summary: dict) -> float:
    """Mean of the last `_window` step losses: the dense run's value is the loss every codec chases."""
    losses = [loss for round_ in summary["rounds"] for loss in round_["losses"]]
    return sum(losses[-_window(summary) :]) / _window(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--loopback-rounds", type=int, default=1)
    parser.add_argument("--shaped-rounds", type=int, default=1)
    parser.add_argument("--bandwidth-mbit", type=float, default=80.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    args = parser.parse_args()
    base = load_spec(args.spec)
    shaping = Shaping(args.bandwidth_mbit, args.latency_ms)

    with tempfile.TemporaryDirectory(prefix="pm-bench-pipeline-") as tmp:
        workdir = Path(tmp)
        loopback = swarm_run(base, Shaping(), workdir / "loopback", args.loopback_rounds)
        single = single_process_tokens_per_second(base, args.loopback_rounds * base.round_steps)
        shaped = {}
        target = None
        for label, codec in CODECS.items():
            spec = ModelSpec.model_validate({**base.model_dump(), "codec": codec})
            max_rounds = 2 * args.shaped_rounds
            shaped[label] = swarm_run(spec, shaping, workdir / label, args.shaped_rounds, target, max_rounds)
            if target is None:
                target = _final_loss(shaped[label])
            print(f"  {label}: {shaped[label]['training_seconds']:.1f} s shaped", flush=True)

    ratio = loopback["tokens_per_second"] / single["tokens_per_second"]
    codecs = {}
    for label, summary in shaped.items():
        per_boundary = summary["boundary_bytes_per_token"]
        codecs[label] = {
            "codec": CODECS[label],
            "bytes_per_token": per_boundary,
            "bytes_per_token_total": sum(b["forward"] + b["backward"] for b in per_boundary),
            "training_seconds": summary["training_seconds"],
            "tokens_per_second": summary["tokens_per_second"],
            "steps": summary["steps"],
            "final_loss_smoothed": _final_loss(summary),
            "seconds_to_dense_loss": time_to_loss(summary, target),
        }
    dense_time = codecs["dense"]["seconds_to_dense_loss"]
    for label, row in codecs.items():
        row["compression_vs_dense"] = codecs["dense"]["bytes_per_token_total"] / row["bytes_per_token_total"]
        if label != "dense":
            row["target"] = "reaches the dense loss in less wall time than dense"
            row["target_met"] = (
                row["seconds_to_dense_loss"] is not None and row["seconds_to_dense_loss"] < dense_time
            )
    report = {
        "spec": base.name,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "tokens_per_step": base.tokens_per_step,
        "torch_threads": base.threads,
        "loopback": {
            "single_process_tokens_per_second": single["tokens_per_second"],
            "swarm_tokens_per_second": loopback["tokens_per_second"],
            "swarm_vs_single": ratio,
            "target": "swarm >= 50% of single process",
            "target_met": ratio >= 0.5,
            "steps": loopback["steps"],
        },
        "shaping": {"bandwidth_mbit": args.bandwidth_mbit, "latency_ms": args.latency_ms},
        "dense_target_loss": target,
        "codecs": codecs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{base.name} spec, {base.tokens_per_step} tokens/step, torch threads {base.threads}, "
        f"load average {report['load_average_1min_at_end']:.1f} on {report['cpus']} CPUs"
    )
    print(
        f"loopback: single process {single['tokens_per_second']:.0f} tok/s, 3-stage swarm "
        f"{loopback['tokens_per_second']:.0f} tok/s = {ratio:.0%} (target >= 50%: "
        f"{'met' if ratio >= 0.5 else 'MISSED'})"
    )
    print(
        f"\nshaped {args.bandwidth_mbit:g} Mbit/s + {args.latency_ms:g} ms; dense loss to reach {target:.4f}"
    )
    columns = f"{'fwd B/tok':>10}{'bwd B/tok':>10}{'x fewer':>9}{'tok/s':>8}{'s to dense loss':>17}"
    header = f"{'codec':<10}{columns}  target"
    print(header)
    print("-" * len(header))
    for label, row in codecs.items():
        first = row["bytes_per_token"][0]
        reached = row["seconds_to_dense_loss"]
        verdict = "" if label == "dense" else ("met" if row["target_met"] else "MISSED")
        reached_text = f"{reached:.1f}" if reached is not None else "not reached"
        print(
            f"{label:<10}{first['forward']:>10.1f}{first['backward']:>10.1f}"
            f"{row['compression_vs_dense']:>9.2f}{row['tokens_per_second']:>8.0f}{reached_text:>17}"
            f"  {verdict}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
