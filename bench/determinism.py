"""Are training results bitwise equal across torch thread counts? Trains the same spec for a few
steps with threads=1, threads=2 and threads=2 again, in one process each time from the seed, and
compares the per-step losses and every stage's final state digest.

Finding on this machine (torch 2.13 CPU): repeat runs at one thread count are bitwise equal;
1 vs 2 threads are not (reductions split differently), so a spec's `threads` is part of the
deterministic mode, recorded in every trace, and replay refuses any other count."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "determinism.json"))
    args = parser.parse_args()
    base = load_spec(args.spec)
    runs = {}
    for label, threads in (("threads=1", 1), ("threads=2", 2), ("threads=2 again", 2)):
        spec = base.model_validate({**base.model_dump(), "threads": threads, "round_steps": args.steps})
        result = train_single_process(spec, 1)
        runs[label] = {"losses": result.losses, "state_digests": result.state_digests}
    one, two, again = runs.values()
    report = {
        "spec": base.name,
        "steps": args.steps,
        "runs": runs,
        "repeatable_at_same_threads": two == again,
        "equal_across_1_and_2_threads": one == two,
        "losses_equal_across_threads": one["losses"] == two["losses"],
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'run':<18}{'last loss':>22}  final state digests (stage 0, 1, 2)")
    for label, run in runs.items():
        digests = " ".join(digest[:12] for digest in run["state_digests"])
        print(f"{label:<18}{run['losses'][-1]!r:>22}  {digests}")
    print(f"\nrepeatable at the same thread count: {report['repeatable_at_same_threads']}")
    print(f"bitwise equal across 1 and 2 threads: {report['equal_across_1_and_2_threads']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
