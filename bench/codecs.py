"""Wire codecs on the small spec: bytes per token crossing each stage boundary, and validation loss
after the same number of training tokens, for each codec side by side, plus a sweep of the
subspace rank.

Every run trains the 4-stage small spec from the same seed on the same batches through the same
StageTrainer code the swarm runs (reference.run_step), changing only `codec`; bytes are what the
trainers actually returned at the boundaries. The subspace codec also needs the token ids at each
boundary (the receiver recomputes the frozen embedding from them): counted here (2 bytes per token,
forward), not for the other codecs. `subspace-full` (k = hidden size, a lossless basis) isolates
what the frozen second embedding costs. Validation runs the pipeline forward-only, through the
codec, on held-out batches of the spec's data set.
Targets: int8 >= 3.5x fewer bytes within 1% of dense's validation loss; subspace >= 10x within 3%.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from offchain.data.shipped import shipped_dataset
from offchain.model.data import validation_batches
from offchain.model.reference import run_step
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.tokens import encode_tokens, token_dtype
from offchain.model.trainer import StageTrainer

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"int8": (3.5, 0.01), "subspace": (10.0, 0.03)}  # (min compression vs dense, max val-loss rise)
SUBSPACE_RISE = TARGETS["subspace"][1]


def codecs(hidden: int, k: int, ranks: list[int]) -> dict[str, dict]:
    subspace = {"name": "subspace", "coordinates": "int8", "block_size": 64}
    runs = {
        "dense": {"name": "dense"},
        "fp16": {"name": "fp16"},
        "int8": {"name": "int8", "block_size": 64},
        "subspace": {**subspace, "k": k},
    }
    runs.update({f"subspace-k{rank}": {**subspace, "k": rank} for rank in ranks if rank != k})
    runs["subspace-full"] = {"name": "subspace", "k": hidden}
    return runs


def validation_loss(trainers: list[StageTrainer], batches: list) -> float:
    spec = trainers[0].spec
    losses = []
    for tokens, targets in batches:
        token_bytes, activation = encode_tokens(tokens, spec), b""
        for trainer in trainers:
            activation = trainer.forward_only(activation, token_bytes)
        logits = torch.from_numpy(np.frombuffer(activation, dtype="<f4").copy())
        losses.append(F.cross_entropy(logits.view(-1, spec.config.vocab_size), targets.view(-1)).item())
    return sum(losses) / len(losses)


def run(spec: ModelSpec, steps: int, batches: list) -> dict:
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    started = time.perf_counter()
    crossed, losses = 0, []
    for step in range(steps):
        loss, step_bytes = run_step(trainers, *spec.round_and_step(step))
        crossed += step_bytes
        losses.append(loss)
    seconds = time.perf_counter() - started
    tokens = steps * spec.tokens_per_step
    per_direction = crossed / (2 * (spec.num_stages - 1) * tokens)
    id_bytes = token_dtype(spec.config.vocab_size).itemsize if spec.codec.name == "subspace" else 0
    return {
        "codec": spec.codec.model_dump(exclude_none=True),
        "forward_bytes_per_token": per_direction + id_bytes,
        "backward_bytes_per_token": per_direction,
        "train_loss_last5": sum(losses[-5:]) / len(losses[-5:]),
        "val_loss": validation_loss(trainers, batches),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument(
        "--steps", type=int, default=40, help="optimizer steps per codec (same tokens for all)"
    )
    parser.add_argument("--k", type=int, default=64, help="the subspace rank held to the target")
    parser.add_argument(
        "--ranks", type=int, nargs="*", default=[16, 32, 128], help="more subspace ranks to sweep"
    )
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "codecs.json"))
    args = parser.parse_args()
    base = load_spec(args.spec)
    shipped_dataset(base.manifest_cid)  # prepared before any timing
    batches = validation_batches(base, args.val_batches)
    load_before = os.getloadavg()[0]
    results = {}
    for label, codec in codecs(base.config.hidden_size, args.k, args.ranks).items():
        spec = ModelSpec.model_validate({**base.model_dump(), "codec": codec})
        results[label] = run(spec, args.steps, batches)
        print(
            f"  {label}: val loss {results[label]['val_loss']:.4f} ({results[label]['train_seconds']} s)",
            flush=True,
        )
    dense = results["dense"]
    dense_bytes = dense["forward_bytes_per_token"] + dense["backward_bytes_per_token"]
    for label, row in results.items():
        row["compression_vs_dense"] = dense_bytes / (
            row["forward_bytes_per_token"] + row["backward_bytes_per_token"]
        )
        row["val_loss_vs_dense"] = row["val_loss"] / dense["val_loss"] - 1
        if label in TARGETS:
            ratio, rise = TARGETS[label]
            row["target"] = f">= {ratio}x fewer bytes, val loss within {rise:.0%}"
            row["target_met"] = row["compression_vs_dense"] >= ratio and row["val_loss_vs_dense"] <= rise
    sweep = {
        label: row
        for label, row in results.items()
        if label.startswith("subspace") and label != "subspace-full"
    }
    within = [row for row in sweep.values() if row["val_loss_vs_dense"] <= SUBSPACE_RISE]
    best = max(within, key=lambda row: row["compression_vs_dense"], default=None)
    report = {
        "spec": base.name,
        "params": sum(
            p.numel() for s in range(base.num_stages) for p in StageTrainer(base, s).module.parameters()
        ),
        "hidden_size": base.config.hidden_size,
        "boundaries": base.num_stages - 1,
        "steps": args.steps,
        "tokens_per_codec": args.steps * base.tokens_per_step,
        "torch_threads": base.profile.threads,
        "load_average_1min_before": load_before,
        "load_average_1min_at_end": os.getloadavg()[0],
        "codecs": results,
        "subspace_sweep": {
            "ranks": sorted(row["codec"]["k"] for row in sweep.values()),
            "largest_compression_within_3pct": best["compression_vs_dense"] if best else None,
            "its_rank": best["codec"]["k"] if best else None,
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{report['spec']} spec, {report['params']:,} params, {report['steps']} steps = "
        f"{report['tokens_per_codec']:,} tokens per codec, {report['boundaries']} boundaries, "
        f"load average {load_before:.1f} -> {report['load_average_1min_at_end']:.1f}"
    )
    columns = f"{'fwd B/tok':>10}{'bwd B/tok':>10}{'x fewer':>9}{'val loss':>10}{'vs dense':>10}"
    header = f"{'codec':<15}{columns}  target"
    print(header)
    print("-" * len(header))
    for label, row in results.items():
        target = ("met: " if row.get("target_met") else "MISSED: ") + row["target"] if "target" in row else ""
        print(
            f"{label:<15}{row['forward_bytes_per_token']:>10.1f}{row['backward_bytes_per_token']:>10.1f}"
            f"{row['compression_vs_dense']:>9.2f}{row['val_loss']:>10.4f}"
            f"{row['val_loss_vs_dense']:>+10.2%}  {target}"
        )
    sweep_report = report["subspace_sweep"]
    if best:
        print(
            f"subspace sweep: largest compression within 3% of dense: "
            f"{sweep_report['largest_compression_within_3pct']:.1f}x (k = {sweep_report['its_rank']})"
        )
    else:
        print("subspace sweep: no rank stays within 3% of dense")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
