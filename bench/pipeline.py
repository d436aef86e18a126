"""Pipeline throughput on the small spec (a 4-stage Llama of 8.4 M parameters) against what someone
would run instead, and how fast that baseline learns.

1. tokens/s of, on the same batches (the spec's data set draw) with the same AdamW semantics and
   torch threads:
   a. baseline: transformers' LlamaForCausalLM in one process (offchain/model/baseline.py);
   b. the pipeline in one process: one StageTrainer per stage exchanging the bytes the swarm would
      (codec round trips, per-micro-batch gradients, state digests and traces every step);
   c. the 4-stage swarm on loopback: 4 `pm worker run` processes, the driver in this process.
   Target: c >= 50% of a. a -> b is what the protocol's bookkeeping costs, b -> c the transport
   (RPC, serialisation, signatures, waiting on the slowest stage).
2. Validation loss of the baseline over wall and CPU time (this process's CPU seconds, all
   threads): target, it falls at least 3 nats below ln(vocab) within 10 CPU-minutes.
3. Peak RSS (VmHWM) of each stage worker process of run c.
Runs never overlap, so each gets the machine's cores. Results: bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from offchain.data.shipped import shipped_dataset
from offchain.model.baseline import UnsplitTrainer
from offchain.model.data import validation_batches
from offchain.model.reference import run_step
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.trainer import StageTrainer
from offchain.swarm.identity import Identity
from offchain.swarm.local import LOCAL_KEY, ROOT, LocalProcess, spawn_pm, worker_args
from offchain.swarm.node import NetworkConfig
from offchain.swarm.run import run_driver

CPU_MINUTES = 10.0
NATS_BELOW_UNIFORM = 3.0


def interleaved_tokens_per_second(spec: ModelSpec, steps: int) -> tuple[dict, dict]:
    """Baseline and one-process pipeline steps taken in turn on the same batches (after one warm-up
    step each), so load from other processes hits both alike; tokens/s from each one's median step."""
    baseline = UnsplitTrainer(spec)
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    runs = {"baseline": baseline.step, "pipeline": lambda round_, step: run_step(trainers, round_, step)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(steps + 1):
        for name, step in runs.items():
            started = time.perf_counter()
            step(*spec.round_and_step(index))
            if index:
                seconds[name].append(time.perf_counter() - started)
    results = []
    for name in runs:
        median = statistics.median(seconds[name])
        results.append(
            {"steps": steps, "median_step_s": median, "tokens_per_second": spec.tokens_per_step / median}
        )
    return results[0], results[1]


def peak_rss_mib(process: LocalProcess) -> float:
    """VmHWM of a running process, in MiB."""
    for line in Path(f"/proc/{process.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {process.name}")


def swarm_run(spec: ModelSpec, workdir: Path, rounds: int) -> tuple[dict, list[float]]:
    """One fresh worker per stage, `rounds` rounds from the seed; the summary and each worker's peak RSS."""
    workdir.mkdir(parents=True)
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    workers: list[LocalProcess] = []
    try:
        # Each worker its own state folder: it keeps its libp2p identity there (two sharing one would
        # be one peer, and the second could not join the first).
        first = spawn_pm("stage0", worker_args(spec_path, 0, workdir / "stage0"), workdir)
        workers.append(first)
        boot = first.maddr()
        for stage in range(1, spec.num_stages):
            args = worker_args(spec_path, stage, workdir / f"stage{stage}", [boot])
            workers.append(spawn_pm(f"stage{stage}", args, workdir))
        for worker in workers:
            worker.maddr()
        network = NetworkConfig(initial_peers=(boot,))
        summary = asyncio.run(run_driver(spec, Identity.from_key(LOCAL_KEY), network, rounds=rounds))
        steps = [
            b - a
            for round_ in summary["rounds"]
            for a, b in itertools.pairwise([0.0, *round_["step_seconds"]])
        ]
        summary["median_step_s"] = statistics.median(steps)
        summary["median_tokens_per_second"] = spec.tokens_per_step / summary["median_step_s"]
        return summary, [peak_rss_mib(worker) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()


def loss_curve(spec: ModelSpec, cpu_minutes: float, every_steps: int, val_batches: int) -> list[dict]:
    """Train the baseline for `cpu_minutes` of this process's CPU time (evaluations not counted),
    recording the validation loss every `every_steps` steps."""
    batches = validation_batches(spec, val_batches)
    baseline = UnsplitTrainer(spec)
    wall, training_cpu, step = 0.0, 0.0, 0
    curve = [{"step": 0, "wall_s": 0.0, "cpu_s": 0.0, "val_loss": baseline.validation_loss(batches)}]
    while training_cpu < cpu_minutes * 60:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(every_steps):
            baseline.step(*spec.round_and_step(step))
            step += 1
        wall += time.perf_counter() - started
        training_cpu += time.process_time() - cpu
        point = {
            "step": step,
            "wall_s": wall,
            "cpu_s": training_cpu,
            "val_loss": baseline.validation_loss(batches),
        }
        curve.append(point)
        print(f"  step {step}: val loss {point['val_loss']:.3f} at {training_cpu:.0f} CPU-s", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--rounds", type=int, default=1, help="swarm rounds (and as many steps for a and b)")
    parser.add_argument("--cpu-minutes", type=float, default=CPU_MINUTES)
    parser.add_argument("--eval-every", type=int, default=10, help="steps between validation losses")
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    parser.add_argument(
        "--part",
        choices=("all", "throughput", "loss"),
        default="all",
        help="throughput = parts 1 and 3, loss = part 2; one part replaces only its own figures in --out",
    )
    args = parser.parse_args()
    spec = load_spec(args.spec)
    shipped_dataset(spec.manifest_cid)  # prepared before any timing
    if args.part == "loss":
        loss_only(spec, args)
        return
    steps = args.rounds * spec.round_steps
    load_before = os.getloadavg()[0]

    baseline, pipeline = interleaved_tokens_per_second(spec, steps)
    print(
        f"  baseline LlamaForCausalLM: {baseline['tokens_per_second']:.0f} tok/s, "
        f"pipeline in one process: {pipeline['tokens_per_second']:.0f} tok/s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="pm-bench-pipeline-") as tmp:
        swarm, rss = swarm_run(spec, Path(tmp) / "loopback", args.rounds)
    print(f"  swarm: {swarm['median_tokens_per_second']:.0f} tok/s", flush=True)
    if args.part == "throughput":
        out = Path(args.out)
        loss = json.loads(out.read_text())["loss_curve"] if out.exists() else None
    else:
        curve = loss_curve(spec, args.cpu_minutes, args.eval_every, args.val_batches)
        loss = loss_report(spec, curve, args.cpu_minutes)
    ratio = swarm["median_tokens_per_second"] / baseline["tokens_per_second"]
    report = {
        "spec": spec.name,
        "params": sum(
            p.numel()
            for stage in range(spec.num_stages)
            for p in StageTrainer(spec, stage).module.parameters()
        ),
        "stages": spec.num_stages,
        "tokens_per_step": spec.tokens_per_step,
        "torch_threads": spec.profile.threads,
        "cpus": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_at_end": os.getloadavg()[0],
        "throughput": {
            "baseline_tokens_per_second": baseline["tokens_per_second"],
            "pipeline_one_process_tokens_per_second": pipeline["tokens_per_second"],
            "swarm_tokens_per_second": swarm["median_tokens_per_second"],
            "swarm_tokens_per_second_whole_rounds": swarm["tokens_per_second"],
            "swarm_vs_baseline": ratio,
            "bookkeeping_share_of_baseline": 1
            - pipeline["tokens_per_second"] / baseline["tokens_per_second"],
            "transport_share_of_pipeline": 1
            - swarm["median_tokens_per_second"] / pipeline["tokens_per_second"],
            "target": "swarm >= 50% of a single-process LlamaForCausalLM loop",
            "target_met": ratio >= 0.5,
            "steps": steps,
        },
        "loss_curve": loss,
        "stage_worker_peak_rss_mib": rss,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{spec.name} spec ({report['params'] / 1e6:.2f} M params, {spec.num_stages} stages), "
        f"{spec.tokens_per_step} tokens/step, {spec.profile.threads} torch threads, "
        f"load average {load_before:.1f} -> {report['load_average_1min_at_end']:.1f} on {report['cpus']} CPUs"
    )
    swarm_rate = swarm["median_tokens_per_second"]
    print(
        f"tokens/s: baseline {baseline['tokens_per_second']:.0f}, pipeline in one process "
        f"{pipeline['tokens_per_second']:.0f}, swarm {swarm_rate:.0f} = {ratio:.0%} of the "
        f"baseline (target >= 50%: {'met' if ratio >= 0.5 else 'MISSED'})"
    )
    if args.part == "all":
        print_loss(spec, loss)
    print(f"stage worker peak RSS (MiB): {', '.join(f'{mib:.0f}' for mib in rss)}\nwrote {args.out}")


def loss_report(spec: ModelSpec, curve: list[dict], cpu_minutes: float) -> dict:
    """Part 2's section of the results: the curve, the goal and when it was reached."""
    uniform = math.log(spec.config.vocab_size)
    goal = uniform - NATS_BELOW_UNIFORM
    reached = next((point for point in curve if point["val_loss"] <= goal), None)
    return {
        "uniform_loss": uniform,
        "goal_loss": goal,
        "final_val_loss": curve[-1]["val_loss"],
        "cpu_s_to_goal": reached["cpu_s"] if reached else None,
        "cpu_minutes": cpu_minutes,
        "wall_s_to_goal": reached["wall_s"] if reached else None,
        "tokens_per_step": spec.tokens_per_step,
        "optimizer": spec.optimizer.model_dump(mode="json"),
        "target": f"val loss {NATS_BELOW_UNIFORM:g} nats under ln(vocab) in {cpu_minutes:g} CPU-min",
        "target_met": reached is not None,
        "points": curve,
    }


def print_loss(spec: ModelSpec, loss: dict) -> None:
    first, last = loss["points"][0], loss["points"][-1]
    reached = loss["cpu_s_to_goal"]
    print(
        f"validation loss {first['val_loss']:.2f} -> {last['val_loss']:.2f} in {last['cpu_s'] / 60:.1f} "
        f"CPU-min ({last['wall_s'] / 60:.1f} wall-min); goal {loss['goal_loss']:.2f} = "
        f"ln({spec.config.vocab_size}) - 3: "
        + (f"reached at {reached / 60:.1f} CPU-min" if reached is not None else "NOT reached")
    )


def loss_only(spec: ModelSpec, args: argparse.Namespace) -> None:
    """Part 2 alone: its section of --out replaced (with the load it ran under), the rest kept."""
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"spec": spec.name}
    load_before = os.getloadavg()[0]
    curve = loss_curve(spec, args.cpu_minutes, args.eval_every, args.val_batches)
    loss = loss_report(spec, curve, args.cpu_minutes)
    loss["load_average_1min_before"], loss["load_average_1min_at_end"] = load_before, os.getloadavg()[0]
    report["loss_curve"] = loss
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_loss(spec, loss)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
