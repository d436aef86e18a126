"""`pm driver run` end to end: join the DHT, train N rounds, return a JSON-able summary."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from offchain.model.spec import ModelSpec
from offchain.swarm.authz import Access
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, stop_on_signals
from offchain.swarm.shaping import Shaping

if TYPE_CHECKING:
    from offchain.chain.protocol import Protocol as ChainProtocol

logger = logging.getLogger(__name__)


async def run_driver(
    spec: ModelSpec,
    identity: Identity,
    network: NetworkConfig,
    *,
    rounds: int,
    model_id: int = 0,
    timeout: float = 60.0,
    shaping: Shaping | None = None,
    progress: bool = False,
    chain: ChainProtocol | None = None,
) -> dict:
    """Train `rounds` rounds from the swarm's current round. SIGTERM stops after the current call.

    `chain`: the deployment of on-chain model `model_id` (messages and the driver's peer binding are
    bound to it, binding expiry in chain time); None off-chain."""
    stop = stop_on_signals()
    node = await start_node(network, client_mode=True)
    config = DriverConfig(
        spec,
        identity,
        model_id=model_id,
        call_timeout=timeout,
        shaping=shaping or Shaping(),
        access=Access.on_chain(chain, model_id) if chain is not None else None,
    )
    driver = Driver(config, node)
    bar = Progress(
        TextColumn("[bold]round {task.fields[round]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    results = []
    started = time.monotonic()
    try:
        first = await driver.current_round()
        logger.info("swarm is at round %d: training rounds %d..%d", first, first, first + rounds - 1)
        with bar if progress else nullcontext():
            task = bar.add_task("steps", total=rounds * spec.round_steps, round=first, loss="-")

            def on_step(round_: int, step: int, loss: float) -> None:
                if progress:
                    bar.update(task, advance=1, round=round_, loss=f"{loss:.4f}")
                else:
                    logger.info("round %d step %d loss %.4f", round_, step, loss)

            for round_ in range(first, first + rounds):
                work = asyncio.create_task(driver.run_round(round_, on_step))
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if work not in done:
                    work.cancel()
                    logger.warning("stopped by signal during round %d; the round is not committed", round_)
                    break
                result = work.result()
                results.append(result)
                logger.info(
                    "round %d committed in %.1fs: mean loss %.4f, replicas per stage %s, digests %s",
                    round_,
                    result.seconds,
                    sum(result.losses) / len(result.losses),
                    result.replicas,
                    " ".join(d[:12] for d in result.digests),
                )
    finally:
        await shutdown_node(node)
    elapsed = time.monotonic() - started
    steps = sum(len(result.losses) for result in results)
    tokens = steps * spec.tokens_per_step
    training_seconds = sum(result.seconds for result in results)
    crossings = driver.stats.micro_batches * spec.micro_batch_size * spec.context
    return {
        "model_id": model_id,
        "spec_digest": spec.digest(),
        "rounds": [asdict(result) for result in results],
        "steps": steps,
        "tokens": tokens,
        "seconds": elapsed,
        "training_seconds": training_seconds,
        "tokens_per_second": tokens / training_seconds if training_seconds > 0 else 0.0,
        "final_loss": results[-1].losses[-1] if results else None,
        "final_digests": results[-1].digests if results else [],
        "boundary_bytes_per_token": [
            {"forward": forward / max(crossings, 1), "backward": backward / max(crossings, 1)}
            for forward, backward in zip(driver.stats.forward_bytes, driver.stats.backward_bytes, strict=True)
        ],
        "retried_micro_batches": driver.stats.retried_micro_batches,
        "bans": driver.stats.bans,
        "aborted_rounds": driver.stats.aborted_rounds,
        "pauses": driver.stats.pauses,
    }
