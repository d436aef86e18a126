"""Compute profiles on a CUDA machine: is a stage round bitwise reproducible on the same GPU, and
what does bf16 buy over fp32?

For each dtype (fp32, bf16 autocast with fp32 master state) the spec's profile is switched to
device "cuda" and one round of every stage is trained twice from the seed, in this process, through
the same StageTrainer code the swarm runs: the two runs' state digests and losses must be equal
(run-to-run bitwise equality under the profile). Then tokens/s of each dtype. Results go to
bench/results/gpu_check.json. Without a CUDA device there is nothing to measure: it says so and
exits 0 (and writes nothing, so a result from a GPU machine is not overwritten).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from offchain.model.profile import can_run
from offchain.model.reference import train_single_process
from offchain.model.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]


def cuda_spec(base: ModelSpec, dtype: str) -> ModelSpec:
    profile = base.profile.model_copy(update={"device": "cuda", "dtype": dtype})
    return ModelSpec.model_validate({**base.model_dump(), "profile": profile.model_dump()})


def check(spec: ModelSpec) -> dict:
    """Two runs of one round from the seed: equal bits? and the second run's tokens/s."""
    first = train_single_process(spec, 1)
    torch.cuda.synchronize()
    started = time.perf_counter()
    second = train_single_process(spec, 1)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    bitwise = first.state_digests == second.state_digests and first.losses == second.losses
    return {
        "profile": spec.profile.model_dump(),
        "profile_digest": spec.profile.digest(),
        "run_to_run_bitwise": bitwise,
        "run_to_run_bitwise_target": "equal state digests and losses in two runs",
        "run_to_run_bitwise_target_met": bitwise,
        "tokens_per_second": spec.round_steps * spec.tokens_per_step / seconds,
        "final_loss": second.losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = parser.parse_args()
    base = load_spec(args.spec)
    runnable, reason = can_run(cuda_spec(base, "fp32").profile)
    if not runnable:
        print(f"gpu_check: {reason}; nothing to check here (run it on a CUDA machine)")
        return
    results = {}
    for dtype in ("fp32", "bf16"):
        spec = cuda_spec(base, dtype)
        ok, why = can_run(spec.profile)
        results[dtype] = check(spec) if ok else {"skipped": why}
        print(f"  {dtype}: {results[dtype]}", flush=True)
    report = {
        "spec": base.name,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dtypes": results,
    }
    if "tokens_per_second" in results.get("bf16", {}):
        report["bf16_speedup_vs_fp32"] = (
            results["bf16"]["tokens_per_second"] / results["fp32"]["tokens_per_second"]
        )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
