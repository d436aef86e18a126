"""Continuous batching for one serving stage: concurrent requests share passes.

Each request submits one step at a time (its prompt, then one token per step) and waits for its
output. While the stage computes a pass, new steps queue; when it is free, the oldest waiting step
leaves with every other waiting step that has the same number of new positions (up to
`max_batch`), so a request joins the running batch at its next step, and a prompt does not pad
the one-token steps it would otherwise share a pass with. No timer: an idle stage runs a lone
step at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from offchain.model.kv import Step

RunPass = Callable[[list[Step]], Awaitable[list[bytes]]]


@dataclass
class PassStats:
    passes: int = 0
    steps: int = 0


@dataclass
class PassQueue:
    run: RunPass
    max_batch: int
    stats: PassStats = field(default_factory=PassStats)
    _waiting: list[tuple[Step, asyncio.Future]] = field(default_factory=list)
    _running: asyncio.Task | None = None

    async def submit(self, step: Step) -> bytes:
        """The stage's output for `step`, computed in a pass with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((step, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Passes until nothing waits. A pass is formed when it starts, so every step submitted
        before then (in the same event-loop turn, or during the previous pass) can join it."""
        try:
            while batch := self._next_batch():
                await self._pass(batch)
        finally:
            self._running = None

    def _next_batch(self) -> list[tuple[Step, asyncio.Future]]:
        self._waiting = [(step, future) for step, future in self._waiting if not future.done()]
        if not self._waiting:
            return []
        width = len(self._waiting[0][0].tokens)
        batch = [entry for entry in self._waiting if len(entry[0].tokens) == width][: self.max_batch]
        chosen = {id(future) for _, future in batch}
        self._waiting = [entry for entry in self._waiting if id(entry[1]) not in chosen]
        return batch

    async def _pass(self, batch: list[tuple[Step, asyncio.Future]]) -> None:
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
