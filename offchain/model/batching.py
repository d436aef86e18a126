"""Continuous batching for one serving stage: concurrent requests share passes.

Each request submits one step at a time (its prompt, then one token per step) and waits for its
output. While the stage computes a pass, new steps queue; when it is free, the oldest waiting step
leaves with every other waiting step that has the same number of new positions (up to
`max_batch`), so a request joins the running batch at its next step, and a prompt does not pad
the one-token steps it would otherwise share a pass with.

Gathering. In a pipeline, the steps of requests that shared a pass on one stage may reach the next
stage one by one, a few milliseconds apart: a stage that started a pass on the first arrival would
split them, and the groups, once split, stay split (each arrives while the other's pass runs).
Measured with 8 streaming clients on the 4-stage small spec, each client relaying its own steps:
2 steps per pass on every stage, not 8. So a queue told which requests may submit to it
(`open_requests`: the caches of the stage's sessions that sent a step lately) holds a pass while a
request is *due*: open, not waiting, and last served here no later than one hold after the oldest
waiting step's request was. That is a pass-mate of it, a straggler, or a group less than a hold
behind it (which then joins it). A hold lasts at most twice as long as the last pass took (a step
arriving during a pass waits that long anyway) and at most `max_gather_seconds`, and ends as soon
as the due steps arrive or their requests end (`recount`: a completion that ended closes its
session). A request served here later than that is not waited for: the pass that just ended, a new
completion's prompt that overtook the group, a group more than a hold behind (groups that far apart
are pipelined: they keep different stages busy). Counting every open request, as this queue first
did, held about half of the passes of an 8-client burst until the deadline, ~7 ms a pass on every
stage, for steps that were not coming. A request whose hold ran out is late: no pass waits for it
again until its next step arrives, so a session that keeps stepping slowly (under the 2 s that keep
it open) costs the others at most one held pass per step it sends. A lone request never waits, so
latency at batch 1 is unchanged; the single-process baseline (no `open_requests`) never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from offchain.model.kv import RequestCache, Step

RunPass = Callable[[list[Step]], Awaitable[list[bytes]]]


@dataclass
class PassStats:
    passes: int = 0
    steps: int = 0
    held_seconds: float = 0.0  # passes held for open requests' steps (`_gather`), in all
    holds_expired: int = 0  # holds that ended at their deadline, not because the steps came


@dataclass
class PassQueue:
    run: RunPass
    max_batch: int
    stats: PassStats = field(default_factory=PassStats)
    open_requests: Callable[[], Collection[RequestCache]] | None = None
    max_gather_seconds: float = 0.0
    _waiting: list[tuple[Step, asyncio.Future]] = field(default_factory=list)
    _running: asyncio.Task | None = None  # the task running passes: a drain or a lone request
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _pass_seconds: float = 0.0

    async def submit(self, step: Step) -> bytes:
        """The stage's output for `step`, computed in a pass with whatever else is waiting."""
        if self._running is None and not self._waiting and self._alone():
            return await self._run_alone(step)
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((step, future))
        self._arrived.set()
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    def _alone(self) -> bool:
        """Whether a step that finds the queue idle is the only request that could share its pass.
        Never without `open_requests` (one process): its passes may not yield to the event loop, so
        a request run by its own task would never let the others that arrived with it join."""
        return self.open_requests is not None and len(self.open_requests()) <= 1

    def recount(self) -> None:
        """The open requests changed (one ended): a held pass re-checks whom it waits for."""
        self._arrived.set()

    @staticmethod
    def _stamp(steps: list[Step]) -> None:
        now = time.perf_counter()
        for step in steps:
            step.cache.served_at, step.cache.late = now, False

    async def _run_alone(self, step: Step) -> bytes:
        """A lone request's pass, run by its own task: no drain task and no future to hand the
        output over (each is a turn of the event loop, ~1 ms a token through 4 stages: see
        docs/benchmarks.md, "Where a hop's time goes"). Steps that arrive meanwhile wait, as during
        any pass, and are drained after it."""
        self._running = asyncio.current_task()
        try:
            started = time.perf_counter()
            self._stamp([step])
            (output,) = await self.run([step])
            self._pass_seconds = time.perf_counter() - started
            self.stats.passes += 1
            self.stats.steps += 1
            return output
        finally:
            self._running = None
            if self._waiting:
                self._running = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        """Passes until nothing waits. A pass is formed when it starts, so every step submitted
        before then (in the same event-loop turn, during the previous pass, or while it gathers)
        can join it."""
        try:
            while True:
                await self._gather()
                if not (batch := self._next_batch()):
                    return
                started = time.perf_counter()
                await self._pass(batch)
                self._pass_seconds = time.perf_counter() - started
        finally:
            self._running = None

    async def _gather(self) -> None:
        """Hold the next pass while a request is due (see the module doc)."""
        window = min(2 * self._pass_seconds, self.max_gather_seconds)
        if self.open_requests is None or window <= 0:  # no pass has run yet: nothing to go by
            return
        started = time.perf_counter()
        deadline = started + window
        try:
            while True:
                self._prune()
                if not self._waiting or self._joinable() >= self.max_batch:
                    return
                if not (due := self._due(window)):
                    return
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    for cache in due:
                        cache.late = True
                    self.stats.holds_expired += 1
                    return
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
        finally:
            self.stats.held_seconds += time.perf_counter() - started

    def _due(self, window: float) -> list[RequestCache]:
        """The open requests the next pass may wait for: not waiting, not late, and last served no
        later than `window` after the oldest waiting step's request was."""
        waiting = {id(step.cache) for step, _ in self._waiting}
        until = self._waiting[0][0].cache.served_at + window
        return [
            cache
            for cache in self.open_requests()
            if id(cache) not in waiting and not cache.late and cache.served_at <= until
        ]

    def _joinable(self) -> int:
        """How many waiting steps the next pass could carry: only steps as wide as the oldest share
        a pass, and a prompt's pass is not held for the one-token steps that would arrive."""
        width = len(self._waiting[0][0].tokens)
        if width > 1:
            return self.max_batch
        return sum(1 for step, _ in self._waiting if len(step.tokens) == width)

    def _prune(self) -> None:
        """Drop the waiting steps whose requests were cancelled (their session ended)."""
        self._waiting = [(step, future) for step, future in self._waiting if not future.done()]

    def _next_batch(self) -> list[tuple[Step, asyncio.Future]]:
        self._prune()
        if not self._waiting:
            return []
        width = len(self._waiting[0][0].tokens)
        batch = [entry for entry in self._waiting if len(entry[0].tokens) == width][: self.max_batch]
        chosen = {id(future) for _, future in batch}
        self._waiting = [entry for entry in self._waiting if id(entry[1]) not in chosen]
        return batch

    async def _pass(self, batch: list[tuple[Step, asyncio.Future]]) -> None:
        self._stamp([step for step, _ in batch])
        try:
            outputs = await self.run([step for step, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - every step of the pass gets its failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats.passes += 1
        self.stats.steps += len(batch)
        for (_, future), output in zip(batch, outputs, strict=True):
            if not future.done():  # its request may have been cancelled meanwhile
                future.set_result(output)
