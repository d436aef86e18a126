"""Inference through the swarm (KV cache on every stage) and through the paid gateway, against one
process running the same weights, measured in one run.

1. Latency, one request at a time: completions of the same prompt through the spec's stages on
   loopback (one `pm worker run` per stage, the client in this process: one open stream per
   stage per completion) and with every stage in this process (`LocalPipeline`, the same serving
   code without the network), alternating so both see the same machine load. First-token latency
   (the prompt through every stage and the first token sampled) and decode tokens/s (every later
   token: one-token steps through every stage). Targets: first token <= 2x one process, decode
   tokens/s >= 50% of one process.
2. The paid gateway: `pm gateway run` in front of the same workers; every ticket quoted and paid
   on-chain up front. Bursts alternate: one streaming client redeeming its tickets one after
   another, then 8 streaming clients at once (continuous batching), each of their tickets sent
   twice at the same moment (a double-spend attempt); `--pairs` 8-client bursts, each between two
   1-client bursts. The machine is shared, so the speed-up is the median over the 8-client bursts
   of their tokens/s over the mean of the 1-client bursts just before and after: both sides of a
   ratio see the same load, and a load that drifts during the run cancels out. Per burst: aggregate
   tokens/s, failed tickets (no complete stream), double-served tickets (two), and per stage the
   steps per pass its continuous batching achieved (the stages' `info` pass counters before and
   after). Targets: 8 clients >= 4x one client's aggregate tokens/s; 0 failed, 0 double-served.

Both parts run on anvil with the protocol deployed by scripts/deploy.py and the model created
on-chain, as the authorized P2P plane requires: the stage workers are on-chain members (`pm worker
run --model`: they stake and join), and every completion comes from a gateway of the model (the
creator, also its operator, names its own address with setGateway and serves with its key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.demo.anvil import anvil_account, free_port, start_anvil
from offchain.demo.deploy import deploy_protocol
from offchain.model.generate import LocalPipeline, Pipeline, Sampling, generate
from offchain.model.reference import train_single_process
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.tokens import shipped_tokenizer
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.authz import Access
from offchain.swarm.driver import Driver, DriverConfig, Replica
from offchain.swarm.identity import Identity
from offchain.swarm.inference import SwarmPipeline
from offchain.swarm.local import ROOT, LocalProcess, chain_worker_args, spawn_pm
from offchain.swarm.node import DHTNode, NetworkConfig, shutdown_node, start_node

PROMPT = "The assert statement"
MODEL_ID = 1  # the first model created on the fresh chain
CLIENTS = 8  # paying from anvil accounts 2..9
CREATOR = anvil_account(1)  # creates the model, is its operator and runs its gateway
FIRST_WORKER = 10  # stage s is served by anvil account FIRST_WORKER + s
PRICE = 10**12


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_completion(pipeline: Pipeline, ids: list[int], sampling: Sampling) -> dict:
    """Seconds to the first token, and decode tokens/s over the tokens after it."""
    started = time.perf_counter()
    first = None
    async with pipeline.session() as session:
        async for _ in generate(session, ids, sampling):
            first = first or time.perf_counter()
    ended = time.perf_counter()
    return {
        "first_token_s": first - started,
        "decode_tokens_per_s": (sampling.max_tokens - 1) / (ended - first),
    }


def summarize(runs: list[dict]) -> dict:
    firsts = [run["first_token_s"] for run in runs]
    decode = [run["decode_tokens_per_s"] for run in runs]
    return {
        "requests": len(runs),
        "first_token_p50_s": percentile(firsts, 0.5),
        "first_token_p95_s": percentile(firsts, 0.95),
        "decode_tokens_per_s_p50": percentile(decode, 0.5),
    }


async def gateway_driver(spec: ModelSpec, protocol: Protocol, bootstrap: str) -> tuple[DHTNode, Driver]:
    """A client node and a driver that calls the stages as the model's gateway (the creator's key)."""
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    access = Access.on_chain(protocol, MODEL_ID)
    config = DriverConfig(spec, Identity.from_key(bytes(CREATOR.key)), model_id=MODEL_ID, access=access)
    return node, Driver(config, node)


async def swarm_vs_single(
    spec: ModelSpec, protocol: Protocol, bootstrap: str, requests: int, ids: list[int], sampling: Sampling
) -> dict:
    """Alternate one swarm completion and one single-process completion, after one warm-up each. The
    swarm client calls the stages as the model's gateway (the creator's key)."""
    node, driver = await gateway_driver(spec, protocol, bootstrap)
    swarm = SwarmPipeline(driver)
    states = train_single_process(spec, 0, model_id=MODEL_ID).states
    local = LocalPipeline(spec, states, [0] * spec.num_stages)
    try:
        await one_completion(swarm, ids, sampling)
        await one_completion(local, ids, sampling)
        runs: dict[str, list[dict]] = {"swarm": [], "single": []}
        for _ in range(requests):
            runs["swarm"].append(await one_completion(swarm, ids, sampling))
            runs["single"].append(await one_completion(local, ids, sampling))
    finally:
        await swarm.close()
        await shutdown_node(node)
    return {name: summarize(found) for name, found in runs.items()}


def pay_tickets(
    url: str, deployments: Path, gateway: str, clients: int, count: int, *, max_tokens: int
) -> list:
    """`count` quotes per client, each paid on-chain from that client's own anvil account."""
    tickets: list[list[dict]] = []
    for client in range(clients):
        payer = ChainClient(url, anvil_account(2 + client))
        router = Protocol.load(payer, deployments).router
        mine = []
        for _ in range(count):
            body = {"model": str(MODEL_ID), "prompt": PROMPT, "max_tokens": max_tokens}
            quote = httpx.post(f"{gateway}/v1/quote", json=body, timeout=60).json()
            amount, request_id = int(quote["amount"]), bytes.fromhex(quote["requestId"][2:])
            payer.transact(router.functions.payForInference(MODEL_ID, request_id, amount), value=amount)
            mine.append((body, quote["ticket"]))
        tickets.append(mine)
    return tickets


async def redeem(gateway: str, tickets: list[list[tuple[dict, str]]], twice: bool) -> dict:
    """Every client streams its tickets one after another, all clients at once; with `twice`, each
    ticket is posted twice concurrently. Counts complete streams per ticket and tokens received."""
    served: list[int] = []
    tokens = 0

    async def stream(http: httpx.AsyncClient, body: dict, ticket: str) -> bool:
        nonlocal tokens
        headers = {"Authorization": f"Bearer {ticket}"}
        payload = {**body, "stream": True, "temperature": 0}
        async with http.stream(
            "POST", f"{gateway}/v1/completions", json=payload, headers=headers
        ) as response:
            if response.status_code != 200:
                return False
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    return True
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return False
                    tokens += len(event["choices"][0]["token_ids"]) if event["choices"] else 0
        return False

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=4 * CLIENTS)) as http:

        async def client(mine: list[tuple[dict, str]]) -> None:
            for body, ticket in mine:
                copies = 2 if twice else 1
                done = await asyncio.gather(*(stream(http, body, ticket) for _ in range(copies)))
                served.append(sum(done))

        started = time.perf_counter()
        await asyncio.gather(*(client(mine) for mine in tickets))
        seconds = time.perf_counter() - started
    return {
        "clients": len(tickets),
        "tickets": len(served),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "failed": served.count(0),
        "double_served": sum(1 for count in served if count > 1),
    }


async def pass_counts(driver: Driver, replicas: list[Replica]) -> list[tuple[int, int, float, int]]:
    """(passes, steps, seconds held gathering, holds expired) of each stage's serving so far."""
    replies = await asyncio.gather(*(driver.stage_info(replica) for replica in replicas))
    keys = ("passes", "pass_steps", "pass_held_seconds", "pass_holds_expired")
    return [tuple(reply[key] for key in keys) for reply in replies]


async def gateway_bursts(
    gateway: str, bootstrap: str, spec: ModelSpec, protocol: Protocol, schedule: list[tuple[list, bool]]
) -> list[dict]:
    """The bursts of `schedule` in turn (their tickets; whether each is sent twice), each with the
    load average at its start and the steps per pass every stage's continuous batching achieved."""
    node, driver = await gateway_driver(spec, protocol, bootstrap)
    bursts = []
    try:
        replicas = [(await driver.discover(stage))[0] for stage in range(spec.num_stages)]
        for tickets, twice in schedule:
            load, before = os.getloadavg()[0], await pass_counts(driver, replicas)
            burst = await redeem(gateway, tickets, twice)
            after = await pass_counts(driver, replicas)
            grown = [  # per stage, how much each counter grew during the burst
                [now - then for then, now in zip(stage_before, stage_after, strict=True)]
                for stage_before, stage_after in zip(before, after, strict=True)
            ]
            steps_per_pass = [steps / max(passes, 1) for passes, steps, _, _ in grown]
            held_ms_per_pass = [1000 * held / max(passes, 1) for passes, _, held, _ in grown]
            holds_expired = [expired for _, _, _, expired in grown]
            bursts.append(
                {
                    **burst,
                    "load_average_1min": load,
                    "steps_per_pass": steps_per_pass,
                    "held_ms_per_pass": held_ms_per_pass,
                    "holds_expired": holds_expired,
                }
            )
            print(
                f"  {burst['clients']} client(s): {burst['tokens_per_second']:.1f} tokens/s, "
                f"steps per pass {' '.join(f'{x:.2f}' for x in steps_per_pass)}, "
                f"held ms per pass {' '.join(f'{x:.2f}' for x in held_ms_per_pass)}, "
                f"holds expired {' '.join(str(x) for x in holds_expired)}, load {load:.1f}",
                flush=True,
            )
    finally:
        await shutdown_node(node)
    return bursts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--requests", type=int, default=24, help="completions per side in part 1")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--pairs", type=int, default=5, help="8-client bursts in part 2, each between two 1-client bursts"
    )
    parser.add_argument("--tickets-alone", type=int, default=10, help="tickets of each 1-client burst")
    parser.add_argument("--tickets-per-client", type=int, default=8, help="per client, each 8-client burst")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inference.json"))
    args = parser.parse_args()
    for name in ("requests", "max_tokens", "pairs", "tickets_alone", "tickets_per_client"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    spec = load_spec(args.spec)
    sampling = Sampling(max_tokens=args.max_tokens)
    ids = shipped_tokenizer(spec).encode(PROMPT).ids

    procs: list[LocalProcess] = []
    anvil = start_anvil("--accounts", str(FIRST_WORKER + spec.num_stages))
    url = anvil.url
    load_at_start = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="pm-bench-inference-") as tmp:
            workdir = Path(tmp)
            deployments = workdir / "deployments"
            store = workdir / "store"
            chain_args = ["--rpc-url", url, "--deployments", str(deployments), "--store", str(store)]

            def spawn(name: str, cli: list[str], key: bytes) -> LocalProcess:
                procs.append(spawn_pm(name, cli, workdir, env={"PM_PRIVATE_KEY": "0x" + key.hex()}))
                return procs[-1]

            def worker(stage: int, peers: list[str]) -> LocalProcess:
                cli = chain_worker_args(MODEL_ID, stage, workdir / f"stage{stage}", chain_args, peers)
                return spawn(f"stage{stage}", cli, bytes(anvil_account(FIRST_WORKER + stage).key))

            deploy_protocol(url, deployments, anvil_account(0))
            protocol = Protocol.load(ChainClient(url, CREATOR), deployments)
            create_model(
                protocol,
                EmbeddedStore(store),
                Path(args.spec),
                shares_per_work_unit=10**18,
                revenue_asset="eth",
                operator=None,
            )
            protocol.client.transact(protocol.registry.functions.setGateway(MODEL_ID, CREATOR.address, True))
            bootstrap = worker(0, []).maddr()
            later = [worker(stage, [bootstrap]) for stage in range(1, spec.num_stages)]
            for proc in later:
                proc.maddr()

            print("part 1: swarm vs single process, one request at a time", flush=True)
            latency = asyncio.run(swarm_vs_single(spec, protocol, bootstrap, args.requests, ids, sampling))

            port = free_port()
            gateway = spawn(
                "gateway",
                [
                    "gateway", "run", "--model", str(MODEL_ID), "--port", str(port),
                    "--initial-peers", bootstrap, "--state-dir", str(workdir / "gateway"),
                    "--price-per-token-wei", str(PRICE), *chain_args,
                ],
                bytes(CREATOR.key),
            )  # fmt: skip
            gateway.wait_for("listening on http://")
            base = f"http://127.0.0.1:{port}"
            print("part 2: paying tickets, then 1-client and 8-client bursts in turn", flush=True)
            pay = partial(pay_tickets, url, deployments, base, max_tokens=args.max_tokens)
            alone = [pay(1, args.tickets_alone) for _ in range(args.pairs + 1)]
            together = [pay(CLIENTS, args.tickets_per_client) for _ in range(args.pairs)]
            schedule = [(alone[0], False)]
            for many, one in zip(together, alone[1:], strict=True):
                schedule += [(many, True), (one, False)]
            bursts = asyncio.run(gateway_bursts(base, bootstrap, spec, protocol, schedule))
    finally:
        for proc in procs:
            proc.stop()
        anvil.stop()

    swarm, single = latency["swarm"], latency["single"]
    first_ratio = swarm["first_token_p50_s"] / single["first_token_p50_s"]
    decode_ratio = swarm["decode_tokens_per_s_p50"] / single["decode_tokens_per_s_p50"]
    ones, manys = bursts[0::2], bursts[1::2]
    ratios = [
        many["tokens_per_second"] / statistics.mean([before["tokens_per_second"], after["tokens_per_second"]])
        for before, many, after in zip(ones, manys, ones[1:], strict=False)
    ]
    batching = statistics.median(ratios)
    clean = all(burst["failed"] == 0 and burst["double_served"] == 0 for burst in bursts)
    report = {
        "spec": spec.name,
        "stages": spec.num_stages,
        "load_average_1min_at_start": load_at_start[0],
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "prompt_tokens": len(ids),
        "max_tokens": args.max_tokens,
        "single_process": single,
        "swarm": swarm,
        "first_token_ratio": first_ratio,
        "first_token_target": "swarm <= 2x single process",
        "first_token_target_met": first_ratio <= 2.0,
        "decode_ratio": decode_ratio,
        "decode_target": "swarm decode tokens/s at batch 1 >= 50% of single process",
        "decode_target_met": decode_ratio >= 0.5,
        "gateway_bursts": bursts,
        "gateway_one_client_tokens_per_s_median": statistics.median(b["tokens_per_second"] for b in ones),
        "gateway_clients_tokens_per_s_median": statistics.median(b["tokens_per_second"] for b in manys),
        "batching_ratios": ratios,
        "batching_speedup": batching,
        "batching_target": f"{CLIENTS} streaming clients >= 4x one client's aggregate tokens/s",
        "batching_target_met": batching >= 4.0,
        "serving_target": "0 failed, 0 double-served",
        "serving_target_met": clean,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{spec.name} spec, {spec.num_stages} stages, prompt {report['prompt_tokens']} tokens + "
        f"{args.max_tokens} generated, load average {load_at_start[0]:.1f} -> "
        f"{report['load_average_1min_at_end']:.1f} on {report['cpus']} CPUs"
    )
    header = f"{'':<16}{'first tok p50 s':>17}{'p95 s':>8}{'decode tok/s':>14}"
    print(header)
    print("-" * len(header))
    for label, row in (("single process", single), (f"{spec.num_stages}-stage swarm", swarm)):
        print(
            f"{label:<16}{row['first_token_p50_s']:>17.4f}{row['first_token_p95_s']:>8.4f}"
            f"{row['decode_tokens_per_s_p50']:>14.1f}"
        )

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    print(f"first-token ratio {first_ratio:.2f}x (target <= 2x: {verdict(first_ratio <= 2)})")
    print(f"decode ratio {decode_ratio:.0%} (target >= 50%: {verdict(decode_ratio >= 0.5)})")
    failed = sum(burst["failed"] for burst in bursts)
    doubled = sum(burst["double_served"] for burst in bursts)
    print(
        f"gateway: {CLIENTS} clients / the 1-client bursts around them, tokens/s: "
        f"{' '.join(f'{r:.2f}' for r in ratios)}, "
        f"median {batching:.2f}x (target >= 4x: {verdict(batching >= 4)}); "
        f"failed {failed}, double-served {doubled} ({verdict(clean)})"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
