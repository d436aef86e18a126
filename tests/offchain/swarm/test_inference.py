"""Completions through real stage workers, each stage keeping a KV cache per completion: the same
tokens as one process running the same weights, alone or sharing frames and passes with other
completions, served from the committed round, the caches freed after each completion, a stage
killed mid-completion re-prefilled on its replacement, and training afterwards bitwise unaffected."""

from __future__ import annotations

import asyncio

import pytest

from offchain.errors import UserError
from offchain.model.generate import LocalPipeline, Sampling, check_request, complete, stream_completion
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import shipped_tokenizer
from offchain.swarm.client import call
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.inference import SwarmPipeline
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


async def _sessions_open(driver: Driver) -> dict[str, int]:
    """Completions each live worker holds a cache for (from its `info` RPC), by peer id."""
    found = {}
    for stage in range(driver.num_stages):
        for replica in await driver.discover(stage):
            reply = await call(driver.node.p2p, replica.peer_id, "info", driver._request(), timeout=10)
            found[replica.peer_id] = reply["sessions"]
    return found


async def _over_swarm(spec, bootstrap: str, kill_mid_stream) -> tuple[list, dict, dict, list]:
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    driver = Driver(DriverConfig(spec, Identity.from_key(LOCAL_KEY), call_timeout=20), node)
    pipeline = SwarmPipeline(driver, wait_seconds=60)
    try:
        served = [await complete(pipeline, TOKENIZER, IDS, sampling) for sampling in (GREEDY, SAMPLED)]
        together = await asyncio.gather(
            *(complete(pipeline, TOKENIZER, IDS, s) for s in (GREEDY, SAMPLED, GREEDY))
        )
        relayed = [(relay.frames, relay.steps) for relay in pipeline.relays.values()]
        after_success = await _sessions_open(driver)
        async with pipeline.session() as session:
            tokens, during = [], None
            async for delta in stream_completion(session, TOKENIZER, IDS, LONG):
                tokens += delta.token_ids
                if len(tokens) >= 10 and during is None:
                    replica, _ = session.streams[1]
                    during = (await _sessions_open(driver))[replica.peer_id]
                    await asyncio.to_thread(kill_mid_stream, replica.peer_id)
        served.append(tokens)
        counts = {"during": during, "after_success": after_success, "relayed": relayed}
        return served, counts, await _sessions_open(driver), together
    finally:
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

        def restart_stage1(_: str) -> None:
            """kill -9, then the same worker again from its state folder (its committed round 1)."""
            workers[1].kill9()
            workers[1] = swarm.worker("stage1-restarted", 1, [bootstrap], state_dir="stage1")

        served, counts, after, together = asyncio.run(_over_swarm(spec, bootstrap, restart_stage1))
        local = LocalPipeline(spec, train_single_process(spec, 1).states, [1, 1, 1])
        expected = [asyncio.run(complete(local, TOKENIZER, IDS, s)) for s in (GREEDY, SAMPLED, LONG)]
        for swarm_side, one_process in zip(served[:2], expected, strict=False):
            assert swarm_side.token_ids == one_process.token_ids and swarm_side.text == one_process.text
            assert swarm_side.rounds == [1, 1, 1]  # every stage served its committed round-1 weights
        # Three completions at once: their one-token steps shared frames (and passes), same tokens.
        assert [c.token_ids for c in together] == [expected[i].token_ids for i in (0, 1, 0)]
        assert len(counts["relayed"]) == 3 and all(steps > frames for frames, steps in counts["relayed"])
        # Stage 1 restarted after 10 tokens: re-prefilled once it was back, the same tokens.
        assert served[2] == expected[2].token_ids and len(served[2]) == LONG.max_tokens
        assert counts["during"] == 1
        assert list(counts["after_success"].values()) == [0, 0, 0]
        assert list(after.values()) == [0, 0, 0]
        assert "stage 1: completion stream to" in caplog.text and "re-prefilling" in caplog.text

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
