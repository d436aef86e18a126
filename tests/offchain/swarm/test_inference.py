"""Forward-only inference through real stage workers: the same completion as one process running
the same weights, served from the committed round, and training afterwards is bitwise unaffected."""

from __future__ import annotations

import asyncio

import pytest

from offchain.errors import UserError
from offchain.model.generate import PassBatcher, Sampling, check_request, complete, local_forward
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.local import LOCAL_KEY
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node
from tests.offchain.swarm.conftest import Swarm, write_spec

pytestmark = pytest.mark.slow

PROMPT = "The assert statement"
GREEDY = Sampling(max_tokens=6)
SAMPLED = Sampling(max_tokens=6, temperature=0.8, top_k=20, seed=7)


async def _complete_over_swarm(spec, bootstrap: str) -> list:
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    driver = Driver(DriverConfig(spec, Identity.from_key(LOCAL_KEY)), node)
    try:
        return [await complete(driver.infer, spec, PROMPT, sampling) for sampling in (GREEDY, SAMPLED)]
    finally:
        await shutdown_node(node)


def test_swarm_completion_matches_one_process_and_training_is_untouched(tmp_path):
    swarm = Swarm(tmp_path, write_spec(tmp_path))
    try:
        first = swarm.worker("stage0", 0)
        bootstrap = first.maddr()
        for stage in (1, 2):
            swarm.worker(f"stage{stage}", stage, [bootstrap]).maddr()
        swarm.summary(swarm.driver("train1", 1, [bootstrap]))
        spec = load_spec(swarm.spec)

        remote = asyncio.run(_complete_over_swarm(spec, bootstrap))
        after_one = train_single_process(spec, 1)
        forward = local_forward(spec, after_one.states, [1, 1, 1])
        local = [asyncio.run(complete(forward, spec, PROMPT, sampling)) for sampling in (GREEDY, SAMPLED)]
        for served, expected in zip(remote, local, strict=True):
            assert served.token_ids == expected.token_ids and served.text == expected.text
            assert served.rounds == [1, 1, 1]  # every stage served its committed round-1 weights
        assert len(remote[0].token_ids) == GREEDY.max_tokens

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
        ("x", Sampling(max_tokens=1, temperature=1, top_k=0), "top_k must be between 1 and 256"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path, prompt, sampling, message):
    with pytest.raises(UserError, match=message):
        check_request(load_spec(write_spec(tmp_path)), prompt, sampling)


def test_concurrent_completions_share_passes_and_get_their_solo_results(tmp_path):
    """Six requests at once through one PassBatcher (micro_batch_size 8, depth 2): fewer passes
    than tokens requested, and each result bitwise equal to the request run alone."""
    spec = load_spec(write_spec(tmp_path))
    forward = local_forward(spec, train_single_process(spec, 1).states, [1, 1, 1])
    prompts = [PROMPT, "def f(x):", "The", "import os\n", "a" * 30, "Class"]
    samplings = [GREEDY, SAMPLED, Sampling(max_tokens=3), GREEDY, SAMPLED, Sampling(max_tokens=9)]
    alone = [asyncio.run(complete(forward, spec, p, s)) for p, s in zip(prompts, samplings, strict=True)]

    async def together() -> tuple[list, PassBatcher]:
        batcher = PassBatcher(forward, spec, depth=2)
        jobs = (complete(batcher, spec, p, s) for p, s in zip(prompts, samplings, strict=True))
        return list(await asyncio.gather(*jobs)), batcher

    shared, batcher = asyncio.run(together())
    assert [c.token_ids for c in shared] == [c.token_ids for c in alone]
    assert batcher.rows == sum(s.max_tokens for s in samplings)
    assert batcher.passes < batcher.rows / 2
