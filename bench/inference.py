"""Inference through the swarm and through the paid gateway, measured side by side in one run.

Both run on anvil with the protocol deployed by scripts/deploy.py and the model created on-chain:
the stage workers are on-chain members (`pm worker run --model`, which stake and join), and every
inference call comes from a gateway of the model (the creator, also its operator, set by setGateway),
as the authorized P2P plane requires.

1. Completions of the same prompt through the 3-stage swarm on loopback (3 `pm worker run`
   processes, the Driver in this process with the gateway's key, routes cached between tokens) and
   with the same weights in one process (`local_forward`), requests alternating between the two so
   both see the same machine load: latency p50/p95, tokens/s, and first-token latency (one full
   pass). Target: first-token latency through the swarm <= 3x single process.
2. The paid gateway: `pm gateway run` in front of the same workers. Tickets are quoted and paid on-chain
   up front, then 8 concurrent clients redeem them, each ticket sent twice at the same moment (a
   double-spend attempt): requests/s served, failed tickets (no 200) and double-served tickets
   (two 200s), then every ticket replayed once more (must be 409). Target: 0 failed, 0 double.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.demo.anvil import anvil_account, free_port, start_anvil
from offchain.demo.deploy import deploy_protocol
from offchain.model.generate import Forward, Sampling, complete, local_forward
from offchain.model.reference import train_single_process
from offchain.model.spec import ModelSpec, load_spec
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.authz import Access
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.local import ROOT, LocalProcess, chain_worker_args, spawn_pm
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node

PROMPT = "The assert statement"
MODEL_ID = 1  # the first model created on the fresh chain
CLIENTS = 8  # paying from anvil accounts 2..9
CREATOR = anvil_account(1)  # creates the model, is its operator and runs its gateway
STAGE_WORKERS = (10, 11, 12)  # anvil account of each stage's worker (anvil started with 13 accounts)
PRICE = 10**12


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(forward: Forward, marks: list[float]) -> Forward:
    async def wrapped(tokens: bytes) -> tuple[bytes, list[int]]:
        reply = await forward(tokens)
        marks.append(time.perf_counter())
        return reply

    return wrapped


async def one_completion(forward: Forward, spec: ModelSpec, sampling: Sampling) -> dict:
    marks: list[float] = []
    started = time.perf_counter()
    await complete(timed(forward, marks), spec, PROMPT, sampling)
    total = time.perf_counter() - started
    return {"first_token_s": marks[0] - started, "total_s": total}


def summarize(runs: list[dict], tokens: int) -> dict:
    totals = [run["total_s"] for run in runs]
    firsts = [run["first_token_s"] for run in runs]
    return {
        "requests": len(runs),
        "latency_p50_s": percentile(totals, 0.5),
        "latency_p95_s": percentile(totals, 0.95),
        "first_token_p50_s": percentile(firsts, 0.5),
        "first_token_p95_s": percentile(firsts, 0.95),
        "tokens_per_second": tokens * len(runs) / sum(totals),
    }


async def swarm_vs_single(
    spec: ModelSpec, protocol: Protocol, bootstrap: str, requests: int, sampling: Sampling
) -> dict:
    """Alternate one swarm completion and one single-process completion, after one warm-up each."""
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    access = Access.on_chain(protocol, MODEL_ID)
    config = DriverConfig(spec, Identity.from_key(CREATOR.key), model_id=MODEL_ID, access=access)
    driver = Driver(config, node)
    local = local_forward(
        spec, train_single_process(spec, 0, model_id=MODEL_ID).states, [0] * spec.num_stages
    )
    try:
        await one_completion(driver.infer, spec, sampling)
        await one_completion(local, spec, sampling)
        swarm, single = [], []
        for _ in range(requests):
            swarm.append(await one_completion(driver.infer, spec, sampling))
            single.append(await one_completion(local, spec, sampling))
    finally:
        await shutdown_node(node)
    return {"swarm": summarize(swarm, sampling.max_tokens), "single": summarize(single, sampling.max_tokens)}


def pay_tickets(url: str, deployments: Path, gateway: str, count: int, max_tokens: int) -> list[list[dict]]:
    """`count` quotes per client, each paid on-chain from that client's own anvil account."""
    tickets: list[list[dict]] = []
    for client in range(CLIENTS):
        payer = ChainClient(url, anvil_account(2 + client))
        router = Protocol.load(payer, deployments).router
        mine = []
        for _ in range(count):
            body = {"prompt": PROMPT, "max_tokens": max_tokens}
            quote = httpx.post(f"{gateway}/v1/quote", json=body, timeout=60).json()
            amount, request_id = int(quote["amount"]), bytes.fromhex(quote["requestId"][2:])
            payer.transact(router.functions.payForInference(MODEL_ID, request_id, amount), value=amount)
            mine.append({**body, "ticket": quote["ticket"]})
        tickets.append(mine)
    return tickets


async def redeem(gateway: str, tickets: list[list[dict]]) -> dict:
    """8 clients at once; every ticket posted twice concurrently. Counts 200s per ticket."""
    served: list[int] = []
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=4 * CLIENTS)) as http:

        async def post(body: dict) -> int:
            started = time.perf_counter()
            response = await http.post(f"{gateway}/v1/completions", json=body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            return response.status_code

        async def client(mine: list[dict]) -> None:
            for body in mine:
                codes = await asyncio.gather(post(body), post(body))
                served.append(codes.count(200))

        started = time.perf_counter()
        await asyncio.gather(*(client(mine) for mine in tickets))
        seconds = time.perf_counter() - started
        replays = await asyncio.gather(*(post(body) for mine in tickets for body in mine))
    return {
        "tickets": len(served),
        "seconds": seconds,
        "requests_per_second": served.count(1) / seconds,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "failed": served.count(0),
        "double_served": sum(1 for count in served if count > 1),
        "replays_refused": sum(1 for code in replays if code == 409),
        "replays_served": sum(1 for code in replays if code == 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--requests", type=int, default=8, help="completions per side in part 1")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--tickets-per-client", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inference.json"))
    args = parser.parse_args()
    spec = load_spec(args.spec)
    sampling = Sampling(max_tokens=args.max_tokens)

    procs: list[LocalProcess] = []
    anvil = start_anvil("--accounts", str(max(STAGE_WORKERS) + 1))
    url = anvil.url
    try:
        with tempfile.TemporaryDirectory(prefix="pm-bench-inference-") as tmp:
            workdir = Path(tmp)
            deployments = workdir / "deployments"
            chain_args = [
                "--rpc-url",
                url,
                "--deployments",
                str(deployments),
                "--store",
                str(workdir / "store"),
            ]

            def spawn(name: str, cli: list[str], key: str) -> LocalProcess:
                procs.append(spawn_pm(name, cli, workdir, env={"PM_PRIVATE_KEY": key}))
                return procs[-1]

            def worker(stage: int, peers: list[str]) -> LocalProcess:
                cli = chain_worker_args(MODEL_ID, stage, workdir / f"stage{stage}", chain_args, peers)
                return spawn(f"stage{stage}", cli, anvil_account(STAGE_WORKERS[stage]).key.hex())

            deploy_protocol(url, deployments, anvil_account(0))
            protocol = Protocol.load(ChainClient(url, CREATOR), deployments)
            create_model(
                protocol,
                EmbeddedStore(workdir / "store"),
                Path(args.spec),
                shares_per_work_unit=10**18,
                revenue_asset="eth",
                operator=None,
            )
            registry = protocol.registry.functions
            protocol.client.transact(registry.setGateway(MODEL_ID, CREATOR.address, True))
            bootstrap = worker(0, []).maddr()
            later = [worker(stage, [bootstrap]) for stage in range(1, spec.num_stages)]
            for proc in later:
                proc.maddr()

            print("part 1: swarm vs single process", flush=True)
            latency = asyncio.run(swarm_vs_single(spec, protocol, bootstrap, args.requests, sampling))

            port = free_port()
            gateway = spawn(
                "gateway",
                [
                    "gateway", "run", "--model", str(MODEL_ID), "--port", str(port),
                    "--initial-peers", bootstrap, "--state-dir", str(workdir / "gateway"),
                    "--price-per-token-wei", str(PRICE), *chain_args,
                ],
                CREATOR.key.hex(),
            )  # fmt: skip
            gateway.wait_for("listening on http://")
            base = f"http://127.0.0.1:{port}"
            print("part 2: paying tickets, then 8 concurrent clients", flush=True)
            tickets = pay_tickets(url, deployments, base, args.tickets_per_client, args.max_tokens)
            load = asyncio.run(redeem(base, tickets))
    finally:
        for proc in procs:
            proc.stop()
        anvil.stop()

    swarm, single = latency["swarm"], latency["single"]
    ratio = swarm["first_token_p50_s"] / single["first_token_p50_s"]
    clean = load["failed"] == 0 and load["double_served"] == 0 and load["replays_served"] == 0
    report = {
        "spec": spec.name,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "prompt_tokens": len(PROMPT.encode()),
        "max_tokens": args.max_tokens,
        "single_process": single,
        "swarm": swarm,
        "first_token_ratio": ratio,
        "first_token_target": "swarm <= 3x single process",
        "first_token_target_met": ratio <= 3.0,
        "gateway": {"clients": CLIENTS, **load, "target": "0 failed, 0 double-served", "target_met": clean},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{spec.name} spec, prompt {report['prompt_tokens']} tokens + {args.max_tokens} generated, "
        f"load average {report['load_average_1min_at_end']:.1f} on {report['cpus']} CPUs"
    )
    header = f"{'':<16}{'p50 s':>8}{'p95 s':>8}{'first tok p50 s':>17}{'tokens/s':>10}"
    print(header)
    print("-" * len(header))
    for label, row in (("single process", single), ("3-stage swarm", swarm)):
        print(
            f"{label:<16}{row['latency_p50_s']:>8.3f}{row['latency_p95_s']:>8.3f}"
            f"{row['first_token_p50_s']:>17.4f}{row['tokens_per_second']:>10.1f}"
        )
    print(f"first-token latency ratio {ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'MISSED'})")
    print(
        f"gateway, {CLIENTS} clients, {load['tickets']} paid tickets each sent twice at once: "
        f"{load['requests_per_second']:.2f} requests/s, p50 {load['latency_p50_s']:.2f} s, "
        f"p95 {load['latency_p95_s']:.2f} s; failed {load['failed']}, double-served {load['double_served']}, "
        f"replays refused {load['replays_refused']}/{load['tickets']} ({'met' if clean else 'MISSED'})"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
