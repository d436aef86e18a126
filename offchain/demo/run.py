"""`pm demo` from start to end: each phase in order, every process stopped at the end whatever happens.

chain      anvil + scripts/deploy.py (brownie live path) + `pm data prepare` + `pm model create`
swarm      3 stages x K `pm worker run --model` (+ a `--cheat` worker), `pm verifier run`, `pm gateway run`
train      `pm driver run --rounds 1`, N times, with live loss, tokens/s and bytes on the wire
settle     chain time moved past each challenge window once every verifier judged every open claim
serve      a customer pays for completions with `pm infer`
claim      every worker runs `pm claim`
summary    read back from the chain; --out gets summary.json, loss.png and the store
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from offchain.demo.config import Cast, DemoConfig
from offchain.demo.fleet import Fleet, interrupt_on_signals, stop_leftovers
from offchain.demo.network import DemoNetwork, RoundResult
from offchain.demo.summary import collect, render, write_outputs
from offchain.demo.watch import Watch
from offchain.errors import UserError
from offchain.model.spec import load_spec
from offchain.storage.store import open_store

MARKER = ".pm-demo"
PIDS = "pids"


def prepare_out(out: Path) -> None:
    """A fresh --out folder for every run (a previous demo's is replaced, anything else refused)."""
    if out.exists():
        if (out / MARKER).exists():
            stop_leftovers(out / PIDS)
            shutil.rmtree(out)
        elif any(out.iterdir()):
            raise UserError(f"--out {out} is not empty and was not written by pm demo: choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by pm demo; replaced by the next run\n")


def train(
    net: DemoNetwork, rounds: int, steps_per_round: int, console: Console, minutes: float | None = None
) -> list[RoundResult]:
    """Up to `rounds` rounds, and no new one after `minutes` (when given)."""
    stop_at = time.monotonic() + minutes * 60 if minutes is not None else float("inf")
    progress = Progress(
        TextColumn("[bold]round {task.fields[round]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} tok/s"),
        TextColumn("wire {task.fields[wire]}"),
        TimeElapsedColumn(),
        console=console,
    )
    results: list[RoundResult] = []
    with progress:
        task = progress.add_task(
            "train", total=rounds * steps_per_round, round="-", loss="-", speed="-", wire="-"
        )

        def on_step(round_: int, step: int, loss: float) -> None:
            progress.update(task, advance=1, round=round_, loss=f"{loss:.4f}")

        for _ in range(rounds):
            if time.monotonic() >= stop_at:
                break
            result = net.train_round(on_step)
            results.append(result)
            wire = sum(r.wire_bytes for r in results)
            progress.update(
                task,
                completed=len(results) * steps_per_round,
                loss=f"{result.loss:.4f}",
                speed=f"{result.tokens_per_second:.0f}",
                wire=f"{wire / 1e6:.2f} MB ({result.wire_bytes / result.tokens:.0f} B/token)",
            )
    return results


def run_demo(config: DemoConfig, console: Console) -> dict[str, Any]:
    """Run every phase; returns the summary document (also written under config.out)."""
    started = time.monotonic()
    spec = load_spec(config.spec)
    prepare_out(config.out)
    cast = Cast.for_config(config, spec.num_stages)

    def echo_command(line: str) -> None:
        console.print(line, style="dim", markup=False, highlight=False, soft_wrap=True)

    fleet = Fleet(config.out / "logs", config.out / PIDS, echo_command)
    net = DemoNetwork(config, cast, fleet, Watch(fleet, console.print, config.stage_grace_s), console.print)
    with interrupt_on_signals():
        try:
            net.check_storage()
            console.rule("chain: anvil, contracts, model")
            net.start_chain()
            net.deploy()
            net.prepare_data()
            net.create_model()
            extra = ", two on the cheater's" if config.cheater else ""
            console.rule(
                f"swarm: {len(cast.workers)} stage workers, {len(cast.verifiers)} validators "
                f"(one per stage{extra}), a gateway"
            )
            net.start_workers()
            net.start_verifiers()
            net.start_gateway()
            console.rule(f"train: {config.rounds} rounds of {spec.round_steps} steps")
            if net.injector is not None:
                net.injector.training = True
            rounds = train(net, config.rounds, spec.round_steps, console, config.train_minutes)
            if net.injector is not None:
                net.injector.training = False
            trained_by = net.protocol.client.w3.eth.block_number
            console.rule("settle: validators replay every claim, chain time skips each challenge window")
            net.settle([result.round for result in rounds])
            console.rule("serve: a customer pays for completions")
            completions = net.infer()
            console.rule("claim: every holder claims its revenue")
            claimed = net.claim_revenue()
            store = open_store(config.ipfs_api, net.store_dir)
            faults = [fault.document() for fault in net.watch.faults]
            summary = collect(
                net.protocol, store, net.model_id, cast, rounds, completions, claimed, trained_by, faults
            )
            summary["seconds"] = round(time.monotonic() - started, 1)
            console.rule("summary")
            render(summary, console)
            write_outputs(summary, config.out, config.ipfs_api)
            broken = [invariant for invariant in summary["invariants"] if not invariant["holds"]]
            if broken:
                names = "; ".join(f"{i['name']}: {i['detail']}" for i in broken)
                raise UserError(f"invariant(s) broken: {names} (summary.json in {config.out})")
            console.print(
                f"done in {summary['seconds']:.0f}s; summary.json, loss.png, store/ and logs/ in {config.out}"
            )
            return summary
        finally:
            fleet.close()
            if net.rpc_proxy is not None:
                net.rpc_proxy.close()
