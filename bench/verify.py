"""Verification cost: replaying one stage's round versus computing it, side by side in one run.

"Compute" is the stage's own share of the single-process reference training (the same StageTrainer
calls the swarm makes: forward / forward_backward / backward / apply_step, timed per stage; no
network, so the fairest baseline for the work a claim covers). "Replay" is what `pm verifier run`
does for one round of a claim: fetch the parent checkpoint and the trace from the embedded store
under the stage's hard limits, decrypt them, check the trace against its strict schema and Merkle
root (offchain/verifier/content.py), then replay_round with signatures checked against the
neighbour stages (loading the parent, checking every batch, message signature and digest). Rounds
are signed by throwaway keys, as in the swarm.

Network overhead at probability p: each claim is replayed by a verifier with probability p, so
the verification work added to the network is p * sum(replay) / sum(compute) per verifier
checking independently."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from offchain.model.reference import run_step
from offchain.model.spec import load_spec
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import publish_round
from offchain.proofs.signing import sign_message
from offchain.storage.crypto import StageKey, encrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.verifier.content import open_checkpoint, open_trace
from offchain.verifier.limits import StageLimits

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.2
PROBABILITIES = (0.1, 1.0)


class Clock:
    """Wall time and this process's CPU time (all threads): on a machine shared with other work the
    CPU time is the steadier measure of the work itself, the wall time what a verifier waits."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def running(self):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


class TimedStage:
    """A StageTrainer whose compute calls run on `clock`."""

    def __init__(self, trainer: StageTrainer) -> None:
        self.trainer, self.clock = trainer, Clock()

    def __getattr__(self, name: str):
        attribute = getattr(self.trainer, name)
        if name not in ("forward", "forward_backward", "backward", "apply_step"):
            return attribute

        def timed(*args, **kwargs):
            with self.clock.running():
                return attribute(*args, **kwargs)

        return timed


def _accounts(stages: int):
    return [Account.from_key(keccak(text=f"pm-bench-verify-{i}")) for i in range(stages + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds (after a warm-up step)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "verify.json"))
    args = parser.parse_args()
    spec = load_spec(args.spec)
    stages = spec.num_stages
    driver, *members = _accounts(stages)

    def sign(header, payload):
        if header.direction == "forward":
            account = driver if header.stage == 0 else members[header.stage - 1]
        else:
            account = members[header.stage + 1]
        return sign_message(account.key, header, payload), account.address

    def signers(stage: int) -> dict:
        forward = {driver.address} if stage == 0 else {members[stage - 1].address}
        return {"forward": forward, "backward": {members[stage + 1].address} if stage + 1 < stages else set()}

    keys = [StageKey.generate(1, stage) for stage in range(stages)]
    limits = [StageLimits.of(spec, stage) for stage in range(stages)]
    timed = [TimedStage(StageTrainer(spec, stage, model_id=1)) for stage in range(stages)]
    fetch, replay = [Clock() for _ in range(stages)], [Clock() for _ in range(stages)]
    run_step([StageTrainer(spec, stage) for stage in range(stages)], 0, 0)  # warm-up: first-call costs
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddedStore(Path(folder))
        for round_ in range(args.rounds):
            parents = [stage.trainer.state_bytes() for stage in timed]
            for step in range(spec.round_steps):
                run_step(timed, round_, step, model_id=1, sign=sign)
            for s, stage in enumerate(timed):
                trainer = stage.trainer
                parent_cid = store.put(encrypt_checkpoint(keys[s], parents[s]))
                claim = publish_round(store, keys[s], trainer.state_bytes(), trainer.trace)
                with fetch[s].running():
                    digest = hashlib.sha256(parents[s]).digest()
                    parent = open_checkpoint(store, keys[s], parent_cid, digest, limits[s])
                    trace = open_trace(store, keys[s], claim.trace_cid, claim.trace_root, limits[s])
                with replay[s].running():
                    report = replay_round(spec, s, parent, trace, signers=signers(s))
                if not report.ok:
                    raise SystemExit(f"stage {s} round {round_} did not replay: {report}")
    rows = []
    for s, stage in enumerate(timed):
        compute = stage.clock
        rows.append(
            {
                "stage": s,
                "compute_wall_s": round(compute.wall, 3),
                "replay_wall_s": round(replay[s].wall, 3),
                "fetch_decrypt_wall_s": round(fetch[s].wall, 3),
                "verify_ratio_wall": (replay[s].wall + fetch[s].wall) / compute.wall,
                "compute_cpu_s": round(compute.cpu, 3),
                "verify_cpu_s": round(replay[s].cpu + fetch[s].cpu, 3),
                "verify_ratio_cpu": (replay[s].cpu + fetch[s].cpu) / compute.cpu,
            }
        )
    total_compute = sum(stage.clock.wall for stage in timed)
    total_verify = sum(clock.wall for clock in (*replay, *fetch))
    overhead = {f"p={p}": 100 * p * total_verify / total_compute for p in PROBABILITIES}
    worst = max(row["verify_ratio_wall"] for row in rows)
    report = {
        "spec": spec.name,
        "rounds": args.rounds,
        "round_steps": spec.round_steps,
        "micro_batches": spec.micro_batches,
        "torch_threads": spec.threads,
        "load_average": os.getloadavg()[0],
        "stages": rows,
        "network_overhead_percent": overhead,
        "verify_ratio_wall_worst_stage": worst,
        "verify_ratio_cpu_worst_stage": max(row["verify_ratio_cpu"] for row in rows),
        "verify_ratio_target": f"replay + fetch of a stage's round <= {TARGET_RATIO}x its compute (wall)",
        "verify_ratio_target_met": worst <= TARGET_RATIO,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{spec.name} spec, {args.rounds} round(s) of {spec.round_steps} steps x {spec.micro_batches} "
        f"micro-batches per stage, {spec.threads} torch threads, load average {report['load_average']:.1f}"
    )
    header = (
        f"{'stage':<7}{'compute s':>11}{'replay s':>10}{'fetch s':>9}{'verify/x':>10}"
        f"{'cpu compute':>13}{'cpu verify':>12}{'cpu /x':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['stage']:<7}{row['compute_wall_s']:>11.2f}{row['replay_wall_s']:>10.2f}"
            f"{row['fetch_decrypt_wall_s']:>9.2f}{row['verify_ratio_wall']:>10.2f}"
            f"{row['compute_cpu_s']:>13.2f}{row['verify_cpu_s']:>12.2f}{row['verify_ratio_cpu']:>8.2f}"
        )
    verdict = "met" if report["verify_ratio_target_met"] else "MISSED"
    print(f"target {verdict}: {report['verify_ratio_target']} (worst stage {worst:.2f}x)")
    print(
        "network verification overhead (wall): "
        + ", ".join(f"{name} {value:.1f}%" for name, value in overhead.items())
        + " of training compute per verifier"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
