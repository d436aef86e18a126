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


def test_a_request_just_behind_the_group_joins_it_and_one_far_behind_is_not_waited_for():
    """A group of three shared a pass; a new request's prompt passed after it, `gap` later. When the
    group comes back, the new request's first step is due `gap` after the group's: within a hold
    (twice a pass) the pass waits for it and the four go on together; further behind, the group
    runs at once and the two stay a pipeline apart."""

    async def rounds(gap: float) -> tuple[list[int], float]:
        sizes: list[int] = []
        group, newcomer = [RequestCache() for _ in range(3)], RequestCache()
        queue = recording_queue(sizes, open_requests=[*group, newcomer])
        await asyncio.gather(*(queue.submit(step(cache)) for cache in group))
        await asyncio.sleep(gap - PASS_SECONDS)
        await queue.submit(Step(newcomer, torch.tensor([1, 2, 3])))  # its prompt, `gap` after them

        async def newcomer_step() -> bytes:
            await asyncio.sleep(gap / 2)  # it arrives a little after the group's steps
            return await queue.submit(step(newcomer))

        started = time.perf_counter()
        later = asyncio.ensure_future(newcomer_step())
        await asyncio.gather(*(queue.submit(step(cache)) for cache in group))
        seconds = time.perf_counter() - started
        await later
        return sizes, seconds

    sizes, _ = asyncio.run(rounds(gap=PASS_SECONDS))
    assert sizes == [3, 1, 4]  # it was due within the hold: one pass for all four
    sizes, seconds = asyncio.run(rounds(gap=3 * PASS_SECONDS))
    assert sizes == [3, 1, 3, 1]  # three passes behind: not waited for
    assert seconds < 2 * PASS_SECONDS


def test_a_request_that_does_not_come_holds_one_pass_then_is_late():
    """Two requests shared a pass; one of them sends no next step (a client gone quiet). The other's
    next pass waits for it until the hold runs out, once: the passes after that do not wait."""
    sizes: list[int] = []
    stepping, quiet = RequestCache(), RequestCache()
    queue = recording_queue(sizes, open_requests=[stepping, quiet])

    async def steps() -> list[float]:
        await asyncio.gather(queue.submit(step(stepping)), queue.submit(step(quiet)))
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            await queue.submit(step(stepping))
            seconds.append(time.perf_counter() - started)
        return seconds

    held, *after = asyncio.run(steps())
    assert sizes == [2, 1, 1, 1]
    assert held >= 3 * PASS_SECONDS  # the hold (2 x PASS_SECONDS), then the pass
    assert all(seconds < 2 * PASS_SECONDS for seconds in after)
    assert queue.stats.holds_expired == 1


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
