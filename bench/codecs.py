"""Wire codecs on the small spec, single process: bytes per token per stage boundary and
validation loss after the same number of training tokens, for each codec side by side.

Every run trains the 3-stage small spec from the same seed on the same batches through the same
StageTrainer code the swarm runs (reference.run_step), changing only `codec`. Bytes are what the
trainers actually returned for the boundaries. The subspace codec also needs the token ids at
each boundary: counted here (1 byte per token, forward), not for the other codecs.
`subspace-full` (k = d_model, a lossless basis) isolates what the frozen second embedding costs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from offchain.model.gpt import build_model

from offchain.model.data import encode_tokens, token_dtype, validation_batches
from offchain.model.reference import run_step
from offchain.model.spec import load_spec
from offchain.model.trainer import StageTrainer

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"subspace": (10.0, 0.03), "int8": (3.5, 0.01)}  # (min compression vs dense, max val-loss rise)


def _codecs(d_model: int, k: int, coordinates: str) -> dict[str, dict]:
    subspace = {"name": "subspace", "k": k, "coordinates": coordinates}
    if coordinates == "int8":
        subspace["block_size"] = 128
    return {
        "dense": {"name": "dense"},
        "fp16": {"name": "fp16"},
        "int8": {"name": "int8", "block_size": 64},
        "subspace": subspace,
        "subspace-full": {"name": "subspace", "k": d_model},
    }


def validation_loss(trainers: list[StageTrainer], batches: list) -> float:
    spec = trainers[0].spec
    losses = []
    for tokens, targets in batches:
        token_bytes, activation = encode_tokens(tokens, spec), b""
        for trainer in trainers:
            activation = trainer.forward_only(activation, token_bytes)
        logits = torch.from_numpy(np.frombuffer(activation, dtype="<f4").copy()).view(-1, spec.vocab_size)
        losses.append(F.cross_entropy(logits, targets.reshape(-1)).item())
    return sum(losses) / len(losses)


def run(spec, steps: int, val_batches: int) -> dict:
    trainers = [StageTrainer(spec, stage) for stage in range(spec.num_stages)]
    started = time.perf_counter()
    crossed, losses = 0, []
    for step in range(steps):
        loss, step_bytes = run_step(trainers, step // spec.round_steps, step % spec.round_steps)
        crossed += step_bytes
        losses.append(loss)
    seconds = time.perf_counter() - started
    tokens = steps * spec.tokens_per_step
    boundaries = spec.num_stages - 1
    per_direction = crossed / (2 * boundaries * tokens)
    id_bytes = token_dtype(spec.vocab_size).itemsize if spec.codec.name == "subspace" else 0
    return {
        "codec": spec.codec.model_dump(exclude_none=True),
        "forward_bytes_per_token": per_direction + id_bytes,
        "backward_bytes_per_token": per_direction,
        "train_loss_last5": sum(losses[-5:]) / len(losses[-5:]),
        "val_loss": validation_loss(trainers, validation_batches(spec, val_batches)),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument(
        "--steps", type=int, default=24, help="optimizer steps per codec (same tokens for all)"
    )
    parser.add_argument("--k", type=int, default=72, help="subspace rank")
    parser.add_argument("--coordinates", default="int8", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--val-batches", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "codecs.json"))
    args = parser.parse_args()
    base = load_spec(args.spec)
    results = {}
    for label, codec in _codecs(base.d_model, args.k, args.coordinates).items():
        spec = base.model_validate({**base.model_dump(), "codec": codec, "round_steps": args.steps})
        results[label] = run(spec, args.steps, args.val_batches)
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
    report = {
        "spec": base.name,
        "params": sum(p.numel() for p in build_model(base).parameters()),
        "d_model": base.d_model,
        "boundaries": base.num_stages - 1,
        "steps": args.steps,
        "tokens_per_codec": args.steps * base.tokens_per_step,
        "torch_threads": base.threads,
        "codecs": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{report['spec']} spec, {report['params']:,} params, {report['steps']} steps = "
        f"{report['tokens_per_codec']:,} tokens per codec, {report['boundaries']} boundaries"
    )
    columns = f"{'fwd B/tok':>10}{'bwd B/tok':>10}{'x fewer':>9}{'val loss':>10}{'vs dense':>10}"
    header = f"{'codec':<14}{columns}  target"
    print(header)
    print("-" * len(header))
    for label, row in results.items():
        target = ("met: " if row.get("target_met") else "MISSED: ") + row["target"] if "target" in row else ""
        print(
            f"{label:<14}{row['forward_bytes_per_token']:>10.1f}{row['backward_bytes_per_token']:>10.1f}"
            f"{row['compression_vs_dense']:>9.2f}{row['val_loss']:>10.4f}"
            f"{row['val_loss_vs_dense']:>+10.2%}  {target}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
