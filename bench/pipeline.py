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
import json
import math
import os
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
from offchain.swarm.local import ROOT, LocalProcess, spawn_pm, worker_args
from offchain.swarm.node import NetworkConfig
from offchain.swarm.run import run_driver

CPU_MINUTES = 10.0
NATS_BELOW_UNIFORM = 3.0


def timed_steps(step, spec: ModelSpec, steps: int) -> dict:
    """`step(round, step)` once to warm up (allocator, first touch), then `steps` timed steps."""
    step(0, 0)
    started = time.perf_counter()
    for index in range(1, steps + 1):
        step(*divmod(index, spec.round_steps))
    seconds = time.perf_counter() - started
    return {"steps": steps, "seconds": seconds, "tokens_per_second": steps * spec.tokens_per_step / seconds}


def baseline_tokens_per_second(spec: ModelSpec, steps: int) -> dict:
    return timed_steps(UnsplitTrainer(spec).step, spec, steps)


def pipeline_tokens_per_second(spec: ModelSpec, steps: int) -> dict:
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    return timed_steps(lambda round_, step: run_step(trainers, round_, step), spec, steps)


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
        first = spawn_pm("stage0", worker_args(spec_path, 0, workdir), workdir)
        workers.append(first)
        boot = first.maddr()
        for stage in range(1, spec.num_stages):
            workers.append(spawn_pm(f"stage{stage}", worker_args(spec_path, stage, workdir, [boot]), workdir))
        for worker in workers:
            worker.maddr()
        network = NetworkConfig(initial_peers=(boot,))
        summary = asyncio.run(run_driver(spec, Identity.from_key(b"\x01" * 32), network, rounds=rounds))
        return summary, [peak_rss_mib(worker) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()


def loss_curve(spec: ModelSpec, cpu_minutes: float, every_steps: int, val_batches: int) -> list[dict]:
    """Train the baseline until `cpu_minutes` of this process's CPU time, evaluating every few steps."""
    batches = validation_batches(spec, val_batches)
    baseline = UnsplitTrainer(spec)
    wall, cpu = time.perf_counter(), time.process_time()
    curve = [{"step": 0, "wall_s": 0.0, "cpu_s": 0.0, "val_loss": baseline.validation_loss(batches)}]
    step = 0
    while time.process_time() - cpu < cpu_minutes * 60:
        baseline.step(*divmod(step, spec.round_steps))
        step += 1
        if step % every_steps == 0:
            curve.append(
                {
                    "step": step,
                    "wall_s": time.perf_counter() - wall,
                    "cpu_s": time.process_time() - cpu,
                    "val_loss": baseline.validation_loss(batches),
                }
            )
            print(
                f"  step {step}: val loss {curve[-1]['val_loss']:.3f} at {curve[-1]['cpu_s']:.0f} CPU-s",
                flush=True,
            )
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--rounds", type=int, default=1, help="swarm rounds (and as many steps for a and b)")
    parser.add_argument("--cpu-minutes", type=float, default=CPU_MINUTES)
    parser.add_argument("--eval-every", type=int, default=10, help="steps between validation losses")
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    args = parser.parse_args()
    spec = load_spec(args.spec)
    shipped_dataset(spec.manifest_cid)  # prepared before any timing
    steps = args.rounds * spec.round_steps
    load_before = os.getloadavg()[0]

    baseline = baseline_tokens_per_second(spec, steps)
    print(f"  baseline LlamaForCausalLM: {baseline['tokens_per_second']:.0f} tok/s", flush=True)
    pipeline = pipeline_tokens_per_second(spec, steps)
    print(f"  pipeline, one process: {pipeline['tokens_per_second']:.0f} tok/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="pm-bench-pipeline-") as tmp:
        swarm, rss = swarm_run(spec, Path(tmp) / "loopback", args.rounds)
    print(f"  swarm: {swarm['tokens_per_second']:.0f} tok/s", flush=True)
    curve = loss_curve(spec, args.cpu_minutes, args.eval_every, args.val_batches)

    uniform = math.log(spec.config.vocab_size)
    goal = uniform - NATS_BELOW_UNIFORM
    reached = next((point for point in curve if point["val_loss"] <= goal), None)
    ratio = swarm["tokens_per_second"] / baseline["tokens_per_second"]
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
            "swarm_tokens_per_second": swarm["tokens_per_second"],
            "swarm_vs_baseline": ratio,
            "bookkeeping_share_of_baseline": 1
            - pipeline["tokens_per_second"] / baseline["tokens_per_second"],
            "transport_share_of_pipeline": 1 - swarm["tokens_per_second"] / pipeline["tokens_per_second"],
            "target": "swarm >= 50% of a single-process LlamaForCausalLM loop",
            "target_met": ratio >= 0.5,
            "steps": steps,
        },
        "loss_curve": {
            "uniform_loss": uniform,
            "goal_loss": goal,
            "cpu_minutes": args.cpu_minutes,
            "final_val_loss": curve[-1]["val_loss"],
            "cpu_s_to_goal": reached["cpu_s"] if reached else None,
            "wall_s_to_goal": reached["wall_s"] if reached else None,
            "target": f"val loss {NATS_BELOW_UNIFORM:g} nats under ln(vocab) in {args.cpu_minutes:g} CPU-min",
            "target_met": reached is not None,
            "points": curve,
        },
        "stage_worker_peak_rss_mib": rss,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{spec.name} spec ({report['params'] / 1e6:.2f} M params, {spec.num_stages} stages), "
        f"{spec.tokens_per_step} tokens/step, {spec.profile.threads} torch threads, "
        f"load average {load_before:.1f} -> {report['load_average_1min_at_end']:.1f} on {report['cpus']} CPUs"
    )
    print(
        f"tokens/s: baseline {baseline['tokens_per_second']:.0f}, pipeline in one process "
        f"{pipeline['tokens_per_second']:.0f}, swarm {swarm['tokens_per_second']:.0f} = {ratio:.0%} of the "
        f"baseline (target >= 50%: {'met' if ratio >= 0.5 else 'MISSED'})"
    )
    last = curve[-1]
    print(
        f"validation loss {curve[0]['val_loss']:.2f} -> {last['val_loss']:.2f} in {last['cpu_s'] / 60:.1f} "
        f"CPU-min ({last['wall_s'] / 60:.1f} wall-min); goal {goal:.2f} = ln({spec.config.vocab_size}) - 3: "
        + (f"reached at {reached['cpu_s'] / 60:.1f} CPU-min" if reached else "NOT reached")
    )
    print(f"stage worker peak RSS (MiB): {', '.join(f'{mib:.0f}' for mib in rss)}\nwrote {args.out}")


if __name__ == "__main__":
    main()
