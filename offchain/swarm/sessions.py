"""A stage's inference sessions: one per completion, on one `infer` stream, each with a KV cache.

Protocol (msgpack frames, length-prefixed both ways: offchain/swarm/wire.py `FrameReader`):

    client  {"model", "model_id"}                  open; the stage answers {"round", "digest",
                                                   "session"}: the committed weights the completion
                                                   is served from, and the session's key
    client  {"steps": [{"tokens", "activation"}]}  steps, run in order; the stage answers {"output"},
                                                   the last step's output (more than one step only to
                                                   rebuild a cache on a replacement, step by step)
    client  {"batch": [[session, steps], ...]}     the steps of several sessions the same caller
                                                   opened on this stage (this one's or not), run
                                                   together; the stage answers {"outputs": [...]},
                                                   and {"refused": {index: reason}} for entries it
                                                   refused (their outputs are empty)
    client  ends the stream                        the session's cache is freed

Batches. A gateway serving many completions relays every one's step to the next stage; one frame per
session would cost each token a message per stage per session, and the steps of one pass would reach
the next stage one by one (batching.py's gathering waits for them). A batch carries all the steps a
gateway has for this stage at once, on the stream of one of its sessions: one message per pass, and
the steps arrive together. Only the caller that opened a session may step it (a session's key is no
secret: the stage numbers them), and each session at most once per batch.

A refusal or a failure is answered {"error"} and ends the session whose stream carried it (the other
sessions of a refused batch stay open: their caller re-prefills them, it cannot know how far they
got). Every step is checked before it is queued (its tokens, its activation's size, the context,
the stage's cache limit, one step in flight per session), so a step refused for its own session's
sake never fails a pass it would have shared. In a batch, such a step is answered in "refused" and
the other entries are served: one completion's refusal costs the completions sharing its frame
nothing. A refused entry has changed nothing on the stage; its caller drops the session. A batch
that names a session twice or another caller's is refused whole, and so is one in which a step
failed otherwise (a failed pass): the other entries' steps may have run.
Whatever way a session ends (the client closes, disconnects or dies, a step fails, it idles past
`idle_seconds`: no step on its stream or in a batch), its cache is freed in one place (`serve`'s
finally).

Bounds: at most `max_sessions` sessions and `max_tokens` cached positions on this stage (a session
over either is refused; the client tries another replica), one completion at most the context.
A session keeps the weights it opened with, so a round committed meanwhile does not change a
completion halfway; the next session gets the new round.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from google.protobuf.wrappers_pb2 import BytesValue

from offchain.model.batching import PassQueue, PassStats
from offchain.model.kv import MIN_ROWS, RequestCache, ServingStage, Step
from offchain.model.spec import ModelSpec
from offchain.model.tokens import decode_ids
from offchain.swarm.wire import FrameReader, WireError, framed_chunks, infer_frame_limit, pack, unpack

logger = logging.getLogger(__name__)

OPEN_SECONDS = 60.0
REPLY_LINGER = 60.0
ACTIVE_SECONDS = 2.0
Compute = Callable[[Callable[[], Any]], Awaitable[Any]]


class Weights(Protocol):
    """A committed stage state (the server's RoundState): what a session is served from."""

    round: int
    digest: str
    state: bytes


class SessionRefused(ValueError):
    """A session this stage will not open or continue; the reason goes back as one line."""


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 64
    max_tokens: int = 64 * 256
    idle_seconds: float = 60.0
    max_batch: int = 32
    max_gather_seconds: float = 0.1  # a pass waits at most this for open sessions' steps (batching.py)


@dataclass
class _Serving:
    weights: Weights
    stage: ServingStage
    queue: PassQueue


@dataclass
class _Session:
    serving: _Serving
    caller: str
    cache: RequestCache = field(default_factory=RequestCache)
    heard: float = field(default_factory=time.monotonic)  # opened, or last sent a step: for idling
    stepping: bool = False  # a step in flight: one at a time (its own stream or any batch)
    active: float = -math.inf  # when it last sent a step: an opened session that has not yet
    # sent one (a gateway's spare, offchain/swarm/inference.py) holds no pass


class SessionHost:
    """The sessions of one stage; passes run through `compute` (the stage's compute thread)."""

    def __init__(
        self,
        spec: ModelSpec,
        stage: int,
        compute: Compute,
        limits: SessionLimits | None = None,
        *,
        inline: Callable[[], bool] | None = None,
    ) -> None:
        """`inline`: whether the compute thread is idle now, so a lone one-token pass may run on
        the event loop instead (see `_run`)."""
        self.spec, self.stage, self.compute, self.inline = spec, stage, compute, inline
        self.limits = limits or SessionLimits()
        self.sessions: dict[int, _Session] = {}
        self.stats = PassStats()  # every pass served, whatever the weights
        # Keys are not secret (only their opener may step them), but a restarted worker must not
        # hand out the keys of its previous life: a gateway may still hold one from before it.
        self._ids = itertools.count(secrets.randbits(62))
        self._serving: _Serving | None = None
        self._reserved = 0  # positions of admitted steps not yet in a cache (`_run_steps`)
        self._building = asyncio.Lock()
        self.frame_limit = infer_frame_limit(spec)

    @property
    def cached_tokens(self) -> int:
        return sum(session.cache.length for session in self.sessions.values())

    async def serve(
        self,
        requests: AsyncIterator[BytesValue],
        caller: str,
        admit: Callable[[dict], Awaitable[Weights]],
    ) -> AsyncIterator[BytesValue]:
        """One session over one stream from `caller` (its peer id); `admit` checks the opening
        request (model, caller) and returns the committed state to serve it from."""
        frames = FrameReader(requests, self.frame_limit)
        key = next(self._ids)
        try:
            opening = await asyncio.wait_for(frames.read(), OPEN_SECONDS)
            if opening is None:
                return
            weights = await admit(unpack(opening))
            if len(self.sessions) >= self.limits.max_sessions:
                raise SessionRefused(
                    f"stage {self.stage} is serving {len(self.sessions)} sessions, its limit"
                )
            self.sessions[key] = session = _Session(await self._serving_for(weights), caller)
            opened = {"round": weights.round, "digest": weights.digest, "session": key}
            for chunk in framed_chunks(pack(opened)):
                yield chunk
            while (frame := await self._next_frame(frames, session)) is not None:
                request = unpack(frame)
                if "batch" in request:
                    reply = await self._batch(caller, request["batch"])
                else:
                    reply = {"output": await self._steps(session, request)}
                for chunk in framed_chunks(pack(reply)):
                    yield chunk
        except TimeoutError:
            logger.info(
                "stage %d: session %d idle for %.0fs, closed", self.stage, key, self.limits.idle_seconds
            )
            refusal = f"session idle for {self.limits.idle_seconds:.0f}s: closed"
        except (SessionRefused, WireError, ValueError, KeyError, TypeError) as error:
            logger.warning("stage %d refused session %d: %s", self.stage, key, error)
            refusal = f"{type(error).__name__}: {error}"
        else:
            return
        finally:
            ended = self.sessions.pop(key, None)  # before a refusal's linger: the cache is freed at once
            if ended is not None:
                ended.serving.queue.recount()  # a pass held for its step stops waiting
        async for chunk in self._refusal(refusal):
            yield chunk

    async def _refusal(self, message: str) -> AsyncIterator[BytesValue]:
        for chunk in framed_chunks(pack({"error": message})):
            yield chunk
        # Let the caller close the stream (see offchain.swarm.wire); this wait is cancelled then.
        await asyncio.sleep(REPLY_LINGER)

    async def _next_frame(self, frames: FrameReader, session: _Session) -> bytes | None:
        """The session's next frame; TimeoutError once it has been idle `idle_seconds` (a session
        stepped only in batches on other streams is not idle)."""
        reading = asyncio.ensure_future(frames.read())
        try:
            while True:
                silent = time.monotonic() - session.heard
                if silent >= self.limits.idle_seconds:
                    raise TimeoutError
                done, _ = await asyncio.wait({reading}, timeout=self.limits.idle_seconds - silent)
                if done:
                    return reading.result()
        finally:
            if not reading.done():
                reading.cancel()

    async def _batch(self, caller: str, entries: list) -> dict:
        """Each entry's steps on its session, all at once (their passes are shared): the reply
        document, with the reasons of the entries refused (see the module doc)."""
        sessions = []
        for key, _ in entries:
            session = self.sessions.get(key)
            if session is None or session.caller != caller:
                raise SessionRefused(f"stage {self.stage} has no session {key} of this caller")
            if any(session is other for other in sessions):
                raise SessionRefused(f"session {key} appears twice in one batch")
            sessions.append(session)
        outputs = await asyncio.gather(
            *(
                self._steps(session, {"steps": steps})
                for session, (_, steps) in zip(sessions, entries, strict=True)
            ),
            return_exceptions=True,  # every step done before the batch is answered, failed or not
        )
        refused = {}
        for index, output in enumerate(outputs):
            if isinstance(output, SessionRefused):
                refused[index] = str(output)
                outputs[index] = b""
            elif isinstance(output, BaseException):
                raise output
        if refused:
            for index, reason in refused.items():
                logger.warning(
                    "stage %d refused session %d in a batch: %s", self.stage, entries[index][0], reason
                )
            return {"outputs": outputs, "refused": refused}
        return {"outputs": outputs}

    async def _steps(self, session: _Session, request: dict) -> bytes:
        if session.stepping:
            raise SessionRefused("the session already has a step in flight")
        session.stepping = True
        try:
            return await self._run_steps(session, request)
        finally:
            session.stepping = False

    async def _run_steps(self, session: _Session, request: dict) -> bytes:
        """The steps of one request, in order, once every check has passed: a refused request
        (SessionRefused) has changed nothing, neither its session's cache nor the passes it would
        have shared."""
        session.heard = time.monotonic()
        steps = request["steps"]
        if not isinstance(steps, list) or not steps:
            raise SessionRefused("a step request carries a non-empty list of steps")
        if not all(
            isinstance(step, dict)
            and isinstance(step.get("tokens"), bytes)
            and isinstance(step.get("activation", b""), bytes)
            for step in steps
        ):
            raise SessionRefused("a step carries its tokens and activation as bytes")
        try:
            tokens = [decode_ids(step["tokens"], self.spec) for step in steps]
        except ValueError as error:
            raise SessionRefused(str(error)) from None
        start = session.cache.length
        for ids, step in zip(tokens, steps, strict=True):
            if problem := session.serving.stage.refusal(start, len(ids), step.get("activation", b"")):
                raise SessionRefused(problem)
            start += len(ids)
        growth = start - session.cache.length
        cached = self.cached_tokens + self._reserved  # steps admitted, not yet cached, count too
        if cached + growth > self.limits.max_tokens:
            raise SessionRefused(
                f"stage {self.stage} caches {cached} positions; {growth} more exceed its "
                f"limit of {self.limits.max_tokens}"
            )
        session.active = time.monotonic()
        self._reserved += growth
        try:
            output = b""
            for ids, step in zip(tokens, steps, strict=True):
                activation = step.get("activation", b"")
                output = await session.serving.queue.submit(Step(session.cache, ids, activation))
                self._reserved -= len(ids)
                growth -= len(ids)
            return output
        finally:
            self._reserved -= growth  # the steps that did not run

    async def _serving_for(self, weights: Weights) -> _Serving:
        """The ServingStage of `weights`, built once (on the compute thread) per committed state."""
        async with self._building:
            if self._serving is None or self._serving.weights.digest != weights.digest:
                stage = await self.compute(partial(ServingStage, self.spec, self.stage, weights.state))
                queue = PassQueue(
                    partial(self._run, stage),
                    self.limits.max_batch,
                    self.stats,
                    open_requests=partial(self._open_on, weights.digest),
                    max_gather_seconds=self.limits.max_gather_seconds,
                )
                self._serving = _Serving(weights, stage, queue)
            return self._serving

    def _open_on(self, digest: str) -> list[RequestCache]:
        """The caches of the sessions served from the weights `digest` that may share its next pass:
        those active within ACTIVE_SECONDS (a completion sends a step every token; one whose client
        went quiet would otherwise hold passes until the session idles out)."""
        recent = time.monotonic() - ACTIVE_SECONDS
        return [
            session.cache
            for session in self.sessions.values()
            if session.serving.weights.digest == digest and session.active >= recent
        ]

    async def _run(self, stage: ServingStage, steps: list[Step]) -> list[bytes]:
        """A pass on the compute thread; a lone small pass while that thread is idle runs on the
        event loop instead: handing it to the thread and back costs ~0.2-0.4 ms of its ~2.5, a
        fifth of what a token through 4 stages spends outside the forward passes (docs/benchmarks.md,
        "Where a hop's time goes").
        Small: one request's step of at most MIN_ROWS positions (a one-token step, or a short
        prompt: every pass is padded to MIN_ROWS token rows, so it costs at most twice a one-token
        pass). Only while the thread is idle: nothing else (a training step, another pass) can then
        run beside it, so torch's thread settings and the serving weights are used by one pass at a
        time; the loop is held for one small pass."""
        small = len(steps) == 1 and len(steps[0].tokens) <= MIN_ROWS
        if small and self.inline is not None and self.inline():
            return stage.run(steps)
        return await self.compute(partial(stage.run, steps))
