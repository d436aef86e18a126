"""Completions through real stage workers, each stage keeping a KV cache per completion: the same
tokens as one process running the same weights, alone or sharing frames and passes with other
completions, served from the committed round, the caches freed after each completion, a stage
killed mid-completion re-prefilled on its replacement (the gateway forgetting the dead worker's
relay), and training afterwards bitwise unaffected.
The pipeline's spare streams: a completion starts on them, a dead one takes the fault path, a
banned one is not used, they are renewed, and closing the pipeline leaves no session on any stage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from offchain.errors import UserError
from offchain.model.generate import LocalPipeline, Sampling, check_request, complete, stream_completion
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import shipped_tokenizer
from offchain.swarm.client import call
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.inference import Spare, SwarmPipeline
from offchain.swarm.local import LOCAL_KEY
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node
from tests.offchain.swarm.conftest import ROOT, Swarm, write_spec

pytestmark = pytest.mark.slow

PROMPT = "The assert statement"
TINY = load_spec(ROOT / "specs" / "tiny.json")
TOKENIZER = shipped_tokenizer(TINY)
IDS = TOKENIZER.encode(PROMPT).ids
GREEDY = Sampling(max_tokens=6)
SAMPLED = Sampling(max_tokens=6, temperature=0.8, top_k=20, seed=7)
LONG = Sampling(max_tokens=40, temperature=1.0, seed=11)
Counts = dict[str, tuple[int, int]]


async def _stage_counts(driver: Driver) -> Counts:
    """(sessions, cached positions) on each live worker (its `info` RPC), by peer id."""
    found = {}
    for stage in range(driver.num_stages):
        for replica in await driver.discover(stage):
            reply = await call(driver.node.p2p, replica.peer_id, "info", driver._request(), timeout=10)
            found[replica.peer_id] = (reply["sessions"], reply["cached_tokens"])
    return found


async def _settled(driver: Driver, done: Callable[[Counts], bool], seconds: float = 30) -> Counts:
    """The stage counts once `done` holds of them (a session ends on the stage a moment after its
    stream closes), or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while not done(counts := await _stage_counts(driver)) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    return counts


async def _spares(pipeline: SwarmPipeline, seconds: float = 30) -> list[Spare]:
    """Every stage's spare, once each stage has one."""
    deadline = time.monotonic() + seconds
    while None in pipeline.spares and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert None not in pipeline.spares
    return list(pipeline.spares)


def _each(expected: tuple[int, int]) -> Callable[[Counts], bool]:
    return lambda counts: len(counts) == 3 and set(counts.values()) == {expected}


async def _over_swarm(spec, bootstrap: str, restart: Callable[[int], None]) -> tuple[list, dict]:
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    driver = Driver(DriverConfig(spec, Identity.from_key(LOCAL_KEY), call_timeout=20), node)
    # Renewed well after this test's restarts: the spares they kill are still the ones taken.
    pipeline = SwarmPipeline(driver, wait_seconds=60, renew_seconds=55)
    counts: dict = {}
    try:
        served = [await complete(pipeline, TOKENIZER, IDS, sampling) for sampling in (GREEDY, SAMPLED)]
        together = await asyncio.gather(
            *(complete(pipeline, TOKENIZER, IDS, s) for s in (GREEDY, SAMPLED, GREEDY))
        )
        counts["together"] = [completion.token_ids for completion in together]
        counts["relayed"] = [(relay.frames, relay.steps) for relay in pipeline.relays.values()]
        counts["after_success"] = await _settled(driver, _each((1, 0)))  # each stage: the spare only
        spares = await _spares(pipeline)
        # Stage 2's spare dies unnoticed (its worker is killed and restarted while no completion
        # uses it; the completion's first step finds it dead and waits for the restarted worker).
        await asyncio.to_thread(restart, 2)
        async with pipeline.session() as session:
            counts["taken"] = [entry[1] if entry else None for entry in session.streams]
            counts["spares"] = [spare.stream for spare in spares]
            tokens = []
            async for delta in stream_completion(session, TOKENIZER, IDS, LONG):
                tokens += delta.token_ids
                if len(tokens) >= 10 and "during" not in counts:
                    counts["killed"] = [spares[2].replica.ban_key, session.streams[1][0].ban_key]
                    counts["stage0"] = session.streams[0][0].ban_key
                    peer = session.streams[1][0].peer_id
                    during = await _settled(driver, lambda c, peer=peer: c[peer][0] == 2, seconds=10)
                    counts["during"] = during[peer]
                    await asyncio.to_thread(restart, 1)
        served.append(tokens)
        # Stage 1's spare was opened on the worker killed mid-completion: banned, not taken.
        async with pipeline.session() as session:
            counts["banned_spare_taken"] = session.streams[1] is not None
            served.append(
                [
                    token
                    async for delta in stream_completion(session, TOKENIZER, IDS, GREEDY)
                    for token in delta.token_ids
                ]
            )
        counts["relays"], counts["routed"] = set(pipeline.relays), driver.routed_processes()
        counts["open"] = await _settled(driver, lambda c: all(cached == 0 for _, cached in c.values()))
        await pipeline.close()
        counts["closed"] = await _settled(driver, _each((0, 0)))

        renewing = SwarmPipeline(driver, renew_seconds=1)
        try:
            renewing.replenish()
            first = await _spares(renewing)
            deadline = time.monotonic() + 30
            while (
                any(a is b for a, b in zip(first, renewing.spares, strict=True))
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.1)
            counts["renewed"] = not any(a is b for a, b in zip(first, renewing.spares, strict=True))
            counts["renewing"] = await _settled(driver, _each((1, 0)))  # replaced spares were closed
        finally:
            await renewing.close()
        counts["renewing_closed"] = await _settled(driver, _each((0, 0)))
        return served, counts
    finally:
        await pipeline.close()
        await shutdown_node(node)


def test_swarm_completions_match_one_process_and_free_their_caches(tmp_path, caplog):
    swarm = Swarm(tmp_path, write_spec(tmp_path))
    try:
        bootstrap = swarm.worker("stage0", 0).maddr()
        workers = {stage: swarm.worker(f"stage{stage}", stage, [bootstrap]) for stage in (1, 2)}
        for worker in workers.values():
            worker.maddr()
        swarm.summary(swarm.driver("train1", 1, [bootstrap]))
        spec = load_spec(swarm.spec)

        def restart(stage: int) -> None:
            """kill -9, then the same worker again from its state folder (its committed round 1)."""
            workers[stage].kill9()
            name = f"stage{stage}"
            workers[stage] = swarm.worker(f"{name}-restarted", stage, [bootstrap], state_dir=name)

        served, counts = asyncio.run(_over_swarm(spec, bootstrap, restart))
        local = LocalPipeline(spec, train_single_process(spec, 1).states, [1, 1, 1])
        expected = [asyncio.run(complete(local, TOKENIZER, IDS, s)) for s in (GREEDY, SAMPLED, LONG)]
        for swarm_side, one_process in zip(served[:2], expected, strict=False):
            assert swarm_side.token_ids == one_process.token_ids and swarm_side.text == one_process.text
            assert swarm_side.rounds == [1, 1, 1]  # every stage served its committed round-1 weights
        # Three completions at once: their one-token steps shared frames (and passes), same tokens.
        assert counts["together"] == [expected[i].token_ids for i in (0, 1, 0)]
        assert len(counts["relayed"]) == 3 and all(steps > frames for frames, steps in counts["relayed"])
        assert list(counts["after_success"].values()) == [(1, 0)] * 3  # the spares, caching nothing
        # The long completion started on the spares, stage 2's dead: re-opened on its restarted
        # worker and re-prefilled; stage 1 restarted after 10 tokens: re-prefilled once it was back.
        assert counts["taken"] == counts["spares"]
        assert "stage 2: completion stream to" in caplog.text
        assert served[2] == expected[2].token_ids and len(served[2]) == LONG.max_tokens
        assert counts["during"][0] == 2 and counts["during"][1] > 0  # its session, and the next spare
        assert "stage 1: completion stream to" in caplog.text and "re-prefilling" in caplog.text
        assert not counts["banned_spare_taken"] and served[3] == expected[0].token_ids
        # The killed workers' relays (made for the three completions at once) went with them; the
        # completions since ran alone, so stage 0's is the only relay left (none made to close a stream).
        assert counts["relays"] == {counts["stage0"]} and counts["relays"] <= counts["routed"]
        assert not counts["relays"] & set(counts["killed"])
        assert all(cached == 0 for _, cached in counts["open"].values())
        assert list(counts["closed"].values()) == [(0, 0)] * 3  # closing the pipeline ends its spares
        assert counts["renewed"] and list(counts["renewing"].values()) == [(1, 0)] * 3
        assert list(counts["renewing_closed"].values()) == [(0, 0)] * 3

        summary = swarm.summary(swarm.driver("train2", 1, [bootstrap]))
        assert summary["final_digests"] == train_single_process(spec, 2).state_digests
    finally:
        swarm.close()


@pytest.mark.parametrize(
    ("prompt", "sampling", "message"),
    [
        ("", GREEDY, "the prompt is empty"),
        ("x", Sampling(max_tokens=0), "max_tokens must be at least 1"),
        ("x" * 60, Sampling(max_tokens=10), "exceeds the context window of 64 tokens"),
        ("x", Sampling(max_tokens=1, temperature=-1), "temperature must be >= 0"),
        ("x", Sampling(max_tokens=1, temperature=1, top_k=0), "top_k must be between 1 and 512"),
        ("x", Sampling(max_tokens=1, temperature=1, top_p=0), r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path, prompt, sampling, message):
    with pytest.raises(UserError, match=message):
        check_request(load_spec(write_spec(tmp_path)), TOKENIZER.encode(prompt).ids, sampling)
