"""Stage-to-stage forwarding vs today's client round trips, batch 1, measured side by side (issue #17).

Why: the swarm meets "decode tokens/s at batch 1 >= 50% of one process" and "first token <= 2x one
process" on a quiet host and misses them on a loaded one. Today every token goes client -> stage k
-> client for each of the 4 stages (4 round trips: 24 process hand-offs, the client and its p2pd
woken 4 times a token). Forwarding would send the token ids to stage 0, let stage k send its output
straight to stage k+1 and the last stage the logits to the client (15 hand-offs). This probe
measures what that is worth on this host before anyone builds the protocol change. Measurement
only: nothing here is used by offchain/.

Stage processes: one per stage of the spec (small: 4), each with its own hivemind DHT node and p2pd
(`start_node`, as `pm worker run`), a ServingStage of the same seeded weights as the one-process
reference (train_single_process(spec, 0, model_id=1): what bench/inference.py serves), one
RequestCache per completion id (freed by the client's "end"), every step run with
`ServingStage.run` on the event loop, as the real stage runs a lone one-token step while its compute
thread is idle (offchain/swarm/sessions.py `_run`). Frames are length-prefixed msgpack in BytesValue
chunks (offchain/swarm/wire.py). Handlers of every stage:

    probe.steps    the client's stream to each stage, opened once: {"op": "A", cid, tokens,
                   activation} is answered {"cid", "output"} (A); {"op": "B", cid, tokens} (stage 0)
                   is run and forwarded, no reply (B); {"op": "end", cid} frees the cache;
                   {"op": "setup", next} opens this stage's forward stream to stage `next`
    probe.forward  stage k's one stream to stage k+1, opened once by stage k, one-way:
                   {cid, tokens, activation, reply_to}
    probe.replies  the client's stream to the last stage: the logits of B steps, {"cid", "output"},
                   routed by the client's peer id (`reply_to`, set by stage 0 from its caller)

Topologies, alternated completion by completion over the same processes (`BALANCED` order):
(A) round trips, as offchain/swarm/inference.py SwarmSession.step relays a lone completion;
(B) forwarding; (one) LocalPipeline + generate in the client process (bench/inference.py's
reference). Each completion starts after `--gap` seconds of idling (default 0.5: a lone request
finds the host idle, and an idle host is slow to wake; --gap 0: back to back, the host warm). A
greedy completion of PROMPT, --max-tokens new tokens: first-token latency (prompt through every
stage, first token picked) and decode tokens/s (the tokens after the first). A and B
must produce the one-process token ids.

Every frame carries a trace of CLOCK_MONOTONIC times (one clock for every process of the host): when
it was sent, when each stage had read it and finished its pass, when the client had the reply. So a
decode step's wall time splits into the stages' passes and the rest (daemons, hivemind, msgpack,
and for A the client's relaying), leg by leg.

With --busy N (default 2) the measurement is repeated with N processes spinning on the CPU, the
loaded host where the targets are missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from google.protobuf.wrappers_pb2 import BytesValue
from hivemind.p2p import P2P, P2PContext, PeerID

from offchain.model.generate import LocalPipeline, LocalSession, Sampling, generate
from offchain.model.kv import RequestCache, ServingStage, Step
from offchain.model.reference import train_single_process
from offchain.model.spec import ModelSpec, load_spec
from offchain.model.tokens import decode_ids, encode_ids, shipped_tokenizer
from offchain.swarm.local import LocalProcess
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, stop_on_signals, visible_maddrs
from offchain.swarm.wire import FrameReader, framed_chunks, infer_frame_limit, pack, unpack

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The assert statement"
MODEL_ID = 1  # the weights bench/inference.py serves (the first model of its fresh chain)
MODES = ("A", "B", "one")
BALANCED = ("A", "B", "one", "A", "one", "B")
"""The order, repeated: as a cycle, every mode runs just after each other mode once (what ran before
changes a completion's first token: a host idle meanwhile is slow to wake, see `--gap`)."""


async def outgoing(queue: asyncio.Queue) -> AsyncIterator[BytesValue]:
    """A stream's chunks: each frame put on `queue`, until None."""
    while (data := await queue.get()) is not None:
        for chunk in framed_chunks(data):
            yield chunk


# ---- a stage process ---------------------------------------------------------------------------


class ProbeStage:
    def __init__(self, spec: ModelSpec, stage: int, state: bytes, p2p: P2P) -> None:
        self.spec, self.p2p, self.limit = spec, p2p, infer_frame_limit(spec)
        self.serving = ServingStage(spec, stage, state)
        self.caches: dict[int, RequestCache] = {}
        self.forward_out: asyncio.Queue | None = None  # frames to stage + 1 (its probe.forward)
        self.forward_stream: AsyncIterator[BytesValue] | None = None
        self.replies: dict[str, asyncio.Queue] = {}  # client peer id -> its probe.replies outbox

    def run(self, message: dict) -> tuple[bytes, list[float]]:
        """The step's output and its trace, extended by this stage's (read, finished) times."""
        read = time.monotonic()
        cache = self.caches.setdefault(message["cid"], RequestCache())
        tokens = decode_ids(message["tokens"], self.spec)
        output = self.serving.run([Step(cache, tokens, message.get("activation", b""))])[0]
        return output, [*message["trace"], read, time.monotonic()]

    def pass_on(self, message: dict, output: bytes, trace: list[float]) -> None:
        """B: the output to the next stage over this stage's forward stream, or the logits to the client."""
        if self.serving.is_last:
            reply = {"cid": message["cid"], "output": output, "trace": trace}
            self.replies[message["reply_to"]].put_nowait(pack(reply))
        else:
            forward = {**message, "activation": output, "trace": trace}
            self.forward_out.put_nowait(pack(forward))

    async def open_forward(self, peer_id: str) -> None:
        """The one stream to the next stage, reused by every step of every completion."""
        self.forward_out = asyncio.Queue()
        self.forward_stream = await self.p2p.iterate_protobuf_handler(
            PeerID.from_base58(peer_id), "probe.forward", outgoing(self.forward_out), BytesValue
        )

    async def rpc_steps(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        frames = FrameReader(requests, self.limit)
        while (frame := await frames.read()) is not None:
            message = unpack(frame)
            op = message["op"]
            if op == "end":
                self.caches.pop(message["cid"], None)
                continue
            if op == "setup":
                if message["next"] is not None:
                    await self.open_forward(message["next"])
                reply = {"cid": message["cid"], "ready": True}
            else:
                output, trace = self.run(message)
                if op == "B":
                    self.pass_on({**message, "reply_to": context.remote_id.to_base58()}, output, trace)
                    continue
                reply = {"cid": message["cid"], "output": output, "trace": trace}
            for chunk in framed_chunks(pack(reply)):
                yield chunk

    async def rpc_forward(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        frames = FrameReader(requests, self.limit)
        while (frame := await frames.read()) is not None:
            message = unpack(frame)
            self.pass_on(message, *self.run(message))
        return
        yield  # one-way: nothing goes back to the previous stage

    async def rpc_replies(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        client = context.remote_id.to_base58()
        self.replies[client] = queue = asyncio.Queue()
        queue.put_nowait(pack({"cid": -1, "ready": True}))
        try:
            async for chunk in outgoing(queue):
                yield chunk
        finally:
            self.replies.pop(client, None)


async def serve_stage(spec_path: str, stage: int, state_path: str, peers: list[str]) -> None:
    spec = load_spec(spec_path)
    node = await start_node(NetworkConfig(initial_peers=tuple(peers)))
    probe = ProbeStage(spec, stage, Path(state_path).read_bytes(), node.p2p)
    for name in ("steps", "forward", "replies"):
        handler = getattr(probe, f"rpc_{name}")
        await node.p2p.add_protobuf_handler(
            f"probe.{name}", handler, BytesValue, stream_input=True, stream_output=True
        )
    stop = stop_on_signals()
    print("probe stage", stage, "maddrs", " ".join(await visible_maddrs(node)), file=sys.stderr, flush=True)
    await stop.wait()
    if probe.forward_out is not None:
        probe.forward_out.put_nowait(None)
    await shutdown_node(node)


# ---- the client ----------------------------------------------------------------------------------


class Channel:
    """One of the client's streams to a stage: frames out; each reply handed to the future of its cid
    (as SwarmSession._reply awaits a stream's reply in a task of its own)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.outbox, self.waiting = limit, asyncio.Queue(), {}

    async def open(self, p2p: P2P, peer_id: str, handler: str) -> None:
        stream = await p2p.iterate_protobuf_handler(
            PeerID.from_base58(peer_id), handler, outgoing(self.outbox), BytesValue
        )
        self.stream, frames = stream, FrameReader(stream, self.limit)

        async def read() -> None:
            while (frame := await frames.read()) is not None:
                message = unpack(frame)
                self.waiting.pop(message["cid"]).set_result(message)

        self.reader = asyncio.create_task(read())

    def expect(self, cid: int) -> asyncio.Future:
        self.waiting[cid] = asyncio.get_running_loop().create_future()
        return self.waiting[cid]

    def send(self, message: dict) -> None:
        self.outbox.put_nowait(pack(message))

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
        with contextlib.suppress(Exception):
            await self.stream.aclose()


class ProbeSession:
    """One completion over the stage processes, in topology A or B; `traces`: one per step."""

    def __init__(self, swarm: ProbeSwarm, mode: str, cid: int) -> None:
        self.swarm, self.mode, self.cid, self.traces = swarm, mode, cid, []
        self.rounds, self.digests = [0] * swarm.spec.num_stages, [""] * swarm.spec.num_stages

    async def step(self, ids: list[int]) -> np.ndarray:
        tokens, steps = encode_ids(ids, self.swarm.spec), self.swarm.steps
        if self.mode == "A":  # the client relays each stage's output to the next
            output, trace = b"", []
            for channel in steps:
                reply = channel.expect(self.cid)
                channel.send(
                    {
                        "op": "A",
                        "cid": self.cid,
                        "tokens": tokens,
                        "activation": output,
                        "trace": [time.monotonic()],
                    }
                )
                answer = await reply
                output, trace = answer["output"], trace + answer["trace"] + [time.monotonic()]
        else:  # B: token ids to stage 0, the logits come back from the last stage
            reply = self.swarm.replies.expect(self.cid)
            steps[0].send({"op": "B", "cid": self.cid, "tokens": tokens, "trace": [time.monotonic()]})
            answer = await reply
            output, trace = answer["output"], answer["trace"] + [time.monotonic()]
        self.traces.append(trace)
        return np.frombuffer(output, dtype="<f4")

    def close(self) -> None:
        for channel in self.swarm.steps:
            channel.send({"op": "end", "cid": self.cid})


class ProbeSwarm:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec, self.cids = spec, itertools.count()
        self.steps = [Channel(infer_frame_limit(spec)) for _ in range(spec.num_stages)]
        self.replies = Channel(infer_frame_limit(spec))

    async def connect(self, p2p: P2P, peer_ids: list[str]) -> None:
        """The client's streams, and every stage's forward stream to the next, opened once."""
        for channel, peer_id in zip(self.steps, peer_ids, strict=True):
            await channel.open(p2p, peer_id, "probe.steps")
        for stage, channel in enumerate(self.steps):
            ready = channel.expect(-1)
            channel.send({"op": "setup", "cid": -1, "next": [*peer_ids, None][stage + 1]})
            await ready
        ready = self.replies.expect(-1)
        await self.replies.open(p2p, peer_ids[-1], "probe.replies")
        await ready

    @contextlib.asynccontextmanager
    async def session(self, mode: str) -> AsyncIterator[ProbeSession]:
        session = ProbeSession(self, mode, next(self.cids))
        try:
            yield session
        finally:
            session.close()

    async def close(self) -> None:
        for channel in [*self.steps, self.replies]:
            await channel.close()


def breakdown(mode: str, trace: list[float]) -> dict:
    """A step's wall time, the stages' passes, and each leg between them (ms)."""
    if mode == "one":  # one process: the step's passes, nothing between them
        return {"wall": 1e3 * (trace[1] - trace[0]), "compute": 1e3 * (trace[1] - trace[0]), "legs": []}
    if mode == "A":  # per stage: sent, read, finished, reply back at the client
        rows = [trace[i : i + 4] for i in range(0, len(trace), 4)]
        compute = sum(done - read for _, read, done, _ in rows)
        legs = [leg for sent, read, done, back in rows for leg in (read - sent, back - done)]
        wall = rows[-1][3] - rows[0][0]
    else:  # sent, (read, finished) per stage, back at the client
        times = trace
        compute = sum(times[i + 1] - times[i] for i in range(1, len(times) - 1, 2))
        legs = [times[i + 1] - times[i] for i in range(0, len(times) - 1, 2)]
        wall = times[-1] - times[0]
    return {"wall": 1e3 * wall, "compute": 1e3 * compute, "legs": [1e3 * leg for leg in legs]}


async def one_completion(open_session, ids: list[int], sampling: Sampling) -> dict:
    started, first, tokens = time.perf_counter(), None, []
    async with open_session() as session:
        async for token in generate(session, ids, sampling):
            first = first or time.perf_counter()
            tokens.append(token)
    ended = time.perf_counter()
    run = {
        "mode": session.mode,
        "started": started,
        "first_token_s": first - started,
        "decode_tokens_per_s": (len(tokens) - 1) / (ended - first),
        "tokens": tokens,
    }
    run["prefill"] = breakdown(session.mode, session.traces[0])
    run["steps"] = [breakdown(session.mode, trace) for trace in session.traces[1:]]  # decode steps
    return run


class TimedSession:
    """A one-process session whose steps are timed like the probe's (their wall time: all passes)."""

    mode = "one"

    def __init__(self, inner: LocalSession) -> None:
        self.inner, self.traces = inner, []
        self.rounds, self.digests = inner.rounds, inner.digests

    async def step(self, ids: list[int]) -> np.ndarray:
        started = time.monotonic()
        logits = await self.inner.step(ids)
        self.traces.append([started, time.monotonic()])
        return logits


def summarize(mode: str, runs: list[dict], reference: list[int]) -> dict:
    firsts = sorted(run["first_token_s"] for run in runs)
    decode = sorted(run["decode_tokens_per_s"] for run in runs)
    q = statistics.quantiles
    summary = {
        "completions": len(runs),
        "first_token_p50_ms": 1e3 * statistics.median(firsts),
        "first_token_p25_p75_ms": [1e3 * x for x in q(firsts, n=4)[::2]],
        "decode_tokens_per_s_p50": statistics.median(decode),
        "decode_tokens_per_s_p25_p75": q(decode, n=4)[::2],
        "token_mismatches": sum(run["tokens"] != reference for run in runs),
    }
    summary["first_step_passes_ms_p50"] = statistics.median(run["prefill"]["compute"] for run in runs)
    summary["first_step_other_ms_p50"] = statistics.median(
        run["prefill"]["wall"] - run["prefill"]["compute"] for run in runs
    )
    by_previous = {}
    for run in runs:
        by_previous.setdefault(run["after"], []).append(1e3 * run["first_token_s"])
    summary["first_token_p50_ms_by_previous_completion"] = {
        previous: statistics.median(found) for previous, found in sorted(by_previous.items())
    }
    steps = [step for run in runs for step in run["steps"]]
    if steps:
        summary["decode_step_ms_p50"] = statistics.median(s["wall"] for s in steps)
        summary["decode_step_compute_ms_p50"] = statistics.median(s["compute"] for s in steps)
        summary["decode_step_other_ms_p50"] = statistics.median(s["wall"] - s["compute"] for s in steps)
        summary["decode_step_legs_ms_p50"] = [
            statistics.median(legs) for legs in zip(*(s["legs"] for s in steps), strict=True)
        ]
    return summary


async def measure(spec: ModelSpec, states: list[bytes], maddrs: list[str], args, busy: int) -> dict:
    ids = shipped_tokenizer(spec).encode(PROMPT).ids
    sampling = Sampling(max_tokens=args.max_tokens)
    node = await start_node(NetworkConfig(initial_peers=tuple(maddrs)), client_mode=True)
    swarm = ProbeSwarm(spec)
    local = LocalPipeline(spec, states, [0] * spec.num_stages)

    @contextlib.asynccontextmanager
    async def timed_local() -> AsyncIterator[TimedSession]:
        async with local.session() as session:
            yield TimedSession(session)

    opener = {"A": lambda: swarm.session("A"), "B": lambda: swarm.session("B"), "one": timed_local}
    try:
        await swarm.connect(node.p2p, [maddr.rsplit("/p2p/", 1)[1] for maddr in maddrs])
        for mode in MODES * 2:  # warm-up
            await one_completion(opener[mode], ids, sampling)
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        load = os.getloadavg()[0]
        previous = BALANCED[-1]
        for mode in BALANCED * (args.completions // 2):
            await asyncio.sleep(args.gap)  # every completion finds the host idle as long
            run = await one_completion(opener[mode], ids, sampling)
            runs[mode].append({**run, "after": previous})
            previous = mode
    finally:
        await swarm.close()
        await shutdown_node(node)
    reference = runs["one"][0]["tokens"]
    result = {mode: summarize(mode, found, reference) for mode, found in runs.items()}
    result["completions"] = [  # in the order they ran
        {
            "mode": run["mode"],
            "after": run["after"],
            "first_token_ms": 1e3 * run["first_token_s"],
            "decode_tokens_per_s": run["decode_tokens_per_s"],
            "first_step_passes_ms": run["prefill"]["compute"],
        }
        for run in sorted((run for found in runs.values() for run in found), key=lambda run: run["started"])
    ]
    a, b, one = result["A"], result["B"], result["one"]
    first, decode = "first_token_p50_ms", "decode_tokens_per_s_p50"
    result["ratios"] = {
        "first_token_A_over_one": a[first] / one[first],
        "first_token_B_over_one": b[first] / one[first],
        "first_token_B_over_A": b[first] / a[first],
        "decode_A_over_one": a[decode] / one[decode],
        "decode_B_over_one": b[decode] / one[decode],
        "decode_B_over_A": b[decode] / a[decode],
    }
    result.update(busy_processes=busy, gap_s=args.gap, load_average_1min=[load, os.getloadavg()[0]])
    return result


def print_phase(name: str, result: dict) -> None:
    before, after = result["load_average_1min"]
    print(
        f"\n{name}: {result['busy_processes']} busy processes added, load average {before:.1f} -> {after:.1f}"
    )
    header = f"{'':<14}{'first tok p50 ms':>17}{'decode tok/s p50':>17}{'(p25-p75)':>14}"
    header += f"{'step ms':>9}{'passes':>8}{'other':>7}  mismatches"
    print(header + "\n" + "-" * len(header))
    for mode, label in (("A", "A round trips"), ("B", "B forwarding"), ("one", "one process")):
        row = result[mode]
        low, high = row["decode_tokens_per_s_p25_p75"]
        print(
            f"{label:<14}{row['first_token_p50_ms']:>17.1f}{row['decode_tokens_per_s_p50']:>17.1f}"
            f"{f'{low:.1f}-{high:.1f}':>14}{row['decode_step_ms_p50']:>9.2f}"
            f"{row['decode_step_compute_ms_p50']:>8.2f}{row['decode_step_other_ms_p50']:>7.2f}"
            f"  {row['token_mismatches']}"
        )
    for mode in ("A", "B"):
        legs = " ".join(f"{leg:.2f}" for leg in result[mode]["decode_step_legs_ms_p50"])
        print(f"  {mode} legs ms p50 (decode step): {legs}")
    for mode in MODES:
        row = result[mode]
        after = ", ".join(f"{k} {v:.1f}" for k, v in row["first_token_p50_ms_by_previous_completion"].items())
        print(
            f"  {mode}: first step passes {row['first_step_passes_ms_p50']:.1f} ms + other "
            f"{row['first_step_other_ms_p50']:.1f} ms; first token p50 ms after {after}"
        )
    r = result["ratios"]
    print(
        f"  first token: A/one {r['first_token_A_over_one']:.2f}x, B/one {r['first_token_B_over_one']:.2f}x, "
        f"B/A {r['first_token_B_over_A']:.2f}x"
    )
    print(
        f"  decode tok/s: A/one {r['decode_A_over_one']:.0%}, B/one {r['decode_B_over_one']:.0%}, "
        f"B/A {r['decode_B_over_A']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "small.json"))
    parser.add_argument("--completions", type=int, default=24, help="per topology and phase (even)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--gap", type=float, default=0.5, help="seconds of idling before every completion (a lone request)"
    )
    parser.add_argument(
        "--busy", type=int, default=2, help="spinning processes of the loaded phase (0: none)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "forward_probe.json"))
    parser.add_argument("--serve-stage", type=int, help=argparse.SUPPRESS)  # a stage process (internal)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--peer", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stage is not None:
        asyncio.run(serve_stage(args.spec, args.serve_stage, args.state, args.peer))
        return
    spec = load_spec(args.spec)
    states = train_single_process(spec, 0, model_id=MODEL_ID).states
    procs: list[LocalProcess] = []
    spinners: list[subprocess.Popen] = []
    report = {
        "spec": spec.name,
        "stages": spec.num_stages,
        "cpus": os.cpu_count(),
        "max_tokens": args.max_tokens,
        "prompt": PROMPT,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="pm-forward-probe-") as tmp:
            maddrs: list[str] = []
            for stage, state in enumerate(states):  # each joins through every earlier stage
                path = Path(tmp) / f"stage{stage}.state"
                path.write_bytes(state)
                cli = [
                    sys.executable,
                    __file__,
                    "--spec",
                    args.spec,
                    "--serve-stage",
                    str(stage),
                    "--state",
                    str(path),
                ]
                cli += [arg for maddr in maddrs for arg in ("--peer", maddr)]
                log = Path(tmp) / f"stage{stage}.log"
                with open(log, "wb") as err:
                    popen = subprocess.Popen(
                        cli,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        start_new_session=True,
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                    )
                procs.append(LocalProcess(f"stage{stage}", popen, log))
                maddrs.append(procs[-1].maddr())
            print(
                f"{spec.num_stages} stage processes up; {args.completions} completions per topology, phase",
                flush=True,
            )
            report["quiet"] = asyncio.run(measure(spec, states, maddrs, args, 0))
            print_phase("quiet", report["quiet"])
            if args.busy:
                for _ in range(args.busy):
                    spinners.append(
                        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                    )
                report["loaded"] = asyncio.run(measure(spec, states, maddrs, args, args.busy))
                print_phase("loaded", report["loaded"])
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        for proc in procs:
            proc.stop()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
