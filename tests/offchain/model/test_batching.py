"""Continuous batching's gathering (offchain/model/batching.py): in a pipeline, the steps of
requests that shared a pass on the previous stage may arrive one by one; a queue that knows which
requests are open holds the pass until they are all in, never for a request that is ahead of the
waiting steps or has ended, and a lone request never waits."""

import asyncio
import time

import torch

from offchain.model.batching import PassQueue
from offchain.model.kv import RequestCache, Step

PASS_SECONDS = 0.2


def recording_queue(sizes: list[int], open_requests: list[RequestCache] | None) -> PassQueue:
    """A queue whose passes take PASS_SECONDS and record how many steps they carried; the requests
    of `open_requests` are open (None: the queue is not told, as in one process)."""

    async def run(steps: list[Step]) -> list[bytes]:
        sizes.append(len(steps))
        await asyncio.sleep(PASS_SECONDS)
        return [b"out"] * len(steps)

    opened = None if open_requests is None else (lambda: open_requests)
    return PassQueue(run, max_batch=32, open_requests=opened, max_gather_seconds=10.0)


def step(cache: RequestCache | None = None) -> Step:
    return Step(cache or RequestCache(), torch.tensor([1]))


async def staggered(queue: PassQueue, caches: list[RequestCache], gap: float) -> None:
    """One warm-up pass (the queue learns how long a pass takes), then a step of each of `caches`,
    `gap` apart."""
    await queue.submit(step())

    async def arrive(index: int) -> bytes:
        await asyncio.sleep(index * gap)
        return await queue.submit(step(caches[index]))

    assert await asyncio.gather(*(arrive(i) for i in range(len(caches)))) == [b"out"] * len(caches)


def test_steps_arriving_one_by_one_share_a_pass_when_their_requests_are_open():
    gathered, ungathered = [], []
    caches = [RequestCache() for _ in range(4)]
    asyncio.run(staggered(recording_queue(gathered, open_requests=caches), caches, gap=0.02))
    fresh = [RequestCache() for _ in range(4)]
    asyncio.run(staggered(recording_queue(ungathered, open_requests=None), fresh, gap=0.02))
    assert gathered == [1, 4]  # the first arrival waited for the other three
    assert ungathered == [1, 1, 3]  # started on the first arrival: the others waited for the next pass


def test_a_pass_is_not_held_for_a_request_that_is_ahead_of_it():
    """A group of three shared a pass; a new request's prompt passed after it. When the group comes
    back, the new request (served after the group) is open but not waited for: its next step is
    still on its way through the rest of the pipeline."""
    sizes: list[int] = []
    group, newcomer = [RequestCache() for _ in range(3)], RequestCache()
    queue = recording_queue(sizes, open_requests=[*group, newcomer])

    async def rounds() -> float:
        await asyncio.gather(*(queue.submit(step(cache)) for cache in group))
        await queue.submit(Step(newcomer, torch.tensor([1, 2, 3])))  # its prompt
        started = time.perf_counter()
        await asyncio.gather(*(queue.submit(step(cache)) for cache in group))
        return time.perf_counter() - started

    seconds = asyncio.run(rounds())
    assert sizes == [3, 1, 3]
    assert seconds < 2 * PASS_SECONDS  # held for the newcomer, it would have waited 2 x PASS_SECONDS
    assert queue.stats.holds_expired == 0


def test_a_held_pass_stops_waiting_when_the_request_it_waits_for_ends():
    sizes: list[int] = []
    caches = [RequestCache() for _ in range(3)]
    opened = list(caches)
    queue = recording_queue(sizes, open_requests=opened)

    async def one_ends() -> float:
        await asyncio.gather(*(queue.submit(step(cache)) for cache in caches))
        late = asyncio.create_task(queue.submit(step(caches[0])))
        await asyncio.sleep(PASS_SECONDS / 4)  # the pass is held for the other two
        started = time.perf_counter()
        opened[1:] = []  # both other requests end (their sessions close)
        queue.recount()
        await late
        return time.perf_counter() - started

    seconds = asyncio.run(one_ends())
    assert sizes == [3, 1]
    assert seconds < 1.5 * PASS_SECONDS  # the pass itself, not the rest of a 2 x PASS_SECONDS hold


def test_a_lone_request_never_waits():
    sizes: list[int] = []
    queue = recording_queue(sizes, open_requests=[RequestCache()])

    async def two_steps() -> float:
        await queue.submit(step())
        started = time.perf_counter()
        await queue.submit(step())
        return time.perf_counter() - started

    seconds = asyncio.run(two_steps())
    assert sizes == [1, 1]
    assert seconds < 2 * PASS_SECONDS  # a gathering pass would have held it another 2 x PASS_SECONDS


def test_a_prompt_is_not_held_for_steps_that_could_not_join_its_pass():
    sizes: list[int] = []
    others = [RequestCache() for _ in range(3)]  # three other requests open, all decoding
    queue = recording_queue(sizes, open_requests=others)

    async def prompt_after_warm_up() -> float:
        await queue.submit(step())  # the queue learns how long a pass takes
        started = time.perf_counter()
        await queue.submit(Step(RequestCache(), torch.tensor([1, 2, 3])))
        return time.perf_counter() - started

    seconds = asyncio.run(prompt_after_warm_up())
    assert sizes == [1, 1]
    assert seconds < 2 * PASS_SECONDS  # held, it would have waited another 2 x PASS_SECONDS


def test_a_lone_requests_pass_runs_in_its_own_task_and_later_arrivals_follow_it():
    """A lone request skips the drain task (its pass runs in the task that submitted it); a step
    that arrives during that pass is not lost: it runs in the next pass, on a drain task."""
    runners: list[asyncio.Task] = []

    async def run(steps: list[Step]) -> list[bytes]:
        runners.append(asyncio.current_task())
        await asyncio.sleep(PASS_SECONDS)
        return [b"out"] * len(steps)

    queue = PassQueue(run, max_batch=32, open_requests=lambda: [RequestCache()], max_gather_seconds=10.0)

    async def lone_then_late() -> list[asyncio.Task]:
        lone = asyncio.create_task(queue.submit(step()))
        await asyncio.sleep(PASS_SECONDS / 4)  # the lone pass is running
        late = asyncio.create_task(queue.submit(step()))
        assert await asyncio.gather(lone, late) == [b"out", b"out"]
        return [lone, late]

    lone, late = asyncio.run(lone_then_late())
    assert runners[0] is lone
    assert len(runners) == 2 and runners[1] not in (lone, late)
    assert queue.stats.passes == 2 and queue.stats.steps == 2
