"""Completions through the swarm: a session per completion, with one open stream per stage.

Routing is client-side, as in training: the gateway (any holder of a Driver) sends a step's token
ids to stage 0, relays each stage's output to the next, and gets the last stage's logits. Every
stage keeps the completion's KV cache while its stream is open (offchain/swarm/sessions.py);
closing the session closes the streams and so frees the caches.

Faults. A stage whose stream fails (its worker died or restarted, or closed the session; a
stage silent for a couple of seconds is probed, so a dead one is noticed quickly) is
re-opened on a replica serving the same weights: the same worker once it is back, or another
replica, waiting up to `wait_seconds` for one. The new stream is re-prefilled: the session replays
to it every input it relayed to that stage so far, step by step as they first went (one request),
so its cache, and so the completion, come out exactly as before; the other stages keep theirs.
No such replica within the wait: StageLost. A stage that refuses a step (its cache limit, say) or
answers one malformed is treated the same way, except that it is not banned and that the third
refusal within one step fails the completion (WorkerFailed).

Batches. A completion's first step (its prompt) and a re-prefill go out on its own stream; so
do all its steps while it is the pipeline's only completion (a relay would only add turns of the
event loop to every hop). With others open, its steps go through the pipeline's `StepRelay` of
that replica, which sends the steps of all the gateway's completions bound for it in the same turn
of the event loop as one frame (offchain/swarm/relay.py).

Spare streams (connection pooling, like HTTP keep-alive). Opening a stage's stream is most of
what a completion's first token costs over one process (~10 ms over 4 stages at batch 1 on the
small spec: the new libp2p stream, then the first frames on it and the opening reply). So the
pipeline keeps one spare stream per stage, opened in the background with its opening reply
(round, digest) already read; a new completion takes the spares and its first step goes out on
streams already open. The next spares are opened once that first step is through (not during
it: the opens would compete with it for the CPU). Every `renew_seconds` (a third of the stages'
session idle timeout, SessionLimits.idle_seconds) a spare is renewed, the new one opened before
the old one is closed, so a spare is never one its stage is about to close. A spare is taken only
while its replica is still one of the driver's routes (not banned, the same worker session and
weights as last discovered); one that turns out dead at its first step takes the fault path above
like any stream. Cost: one idle session per stage per pipeline (a gateway has one), which caches
nothing and, idle, holds no pass; `close` ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from offchain.model.tokens import encode_ids
from offchain.swarm.client import PeerUnreachable, RemoteError, StageStream, call
from offchain.swarm.driver import Driver, Replica, StageLost, WorkerFailed
from offchain.swarm.relay import StepRelay
from offchain.swarm.wire import infer_frame_limit

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # refusals of one step by live replicas before the completion fails
POLL_SECONDS = 0.5
PROBE_SECONDS = 2.0
RENEW_SECONDS = 20.0  # a third of a stage's session idle timeout (SessionLimits.idle_seconds, 60 s)


@dataclass
class Spare:
    """A stream to `replica` opened ahead of a completion, its opening reply already read."""

    replica: Replica
    stream: StageStream
    opened: float = field(default_factory=time.monotonic)


class SwarmPipeline:
    """Completions over the replicas `driver` finds (its discovery, load counts and bans), with a
    spare stream per stage kept open for the next completion (see the module doc)."""

    def __init__(
        self, driver: Driver, *, wait_seconds: float = 30.0, renew_seconds: float = RENEW_SECONDS
    ) -> None:
        self.driver, self.wait_seconds, self.renew_seconds = driver, wait_seconds, renew_seconds
        self.spec = driver.spec
        self.frame_limit = infer_frame_limit(self.spec)
        self.spares: list[Spare | None] = [None] * self.spec.num_stages
        self._keepers: dict[int, asyncio.Task] = {}  # stage -> the task keeping its spare
        self._tasks: set[asyncio.Task] = set()  # every keeper not yet finished
        self._closed = False
        self.relays: dict[tuple[str, str], StepRelay] = {}  # per replica process (ban_key) in use or routed
        self.open_sessions = 0  # completions in progress: one alone skips the relays

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SwarmSession]:
        spares: list[Spare | None] = []
        try:
            for stage in range(self.spec.num_stages):
                spares.append(await self._take(stage))
        except BaseException:  # cancelled while a stale spare closed: the ones taken are closed too
            await asyncio.gather(*(spare.stream.close() for spare in spares if spare is not None))
            raise
        session = SwarmSession(self, spares)
        self.open_sessions += 1
        try:
            yield session
        finally:
            self.open_sessions -= 1
            await session.close()
            self._forget_gone_relays()
            self.replenish()

    async def _take(self, stage: int) -> Spare | None:
        """The stage's spare for a new session, if it is fresh and its replica still routed (a stale
        one is closed); its keeper stops, and `replenish` starts the next."""
        spare, self.spares[stage] = self.spares[stage], None
        if spare is None:
            return None
        self._keepers.pop(stage).cancel()  # asleep, or opening a renewal: that stream is closed
        fresh = time.monotonic() - spare.opened < self.renew_seconds
        if fresh and spare.stream.opening["digest"] == spare.replica.digest:
            if self.driver.still_routed(stage, spare.replica):
                return spare
        await spare.stream.close()
        return None

    def replenish(self) -> None:
        """Start keeping a spare for every stage that has no keeper (a session took its spare, or
        none could be opened last time)."""
        if self._closed:
            return
        for stage in range(self.spec.num_stages):
            if stage not in self._keepers or self._keepers[stage].done():
                task = asyncio.create_task(self._keep(stage))
                self._keepers[stage] = task
                self._tasks.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("spare stream upkeep failed: %s", task.exception())

    async def _keep(self, stage: int) -> None:
        """Keeps a fresh spare for `stage` until a session takes it (which cancels this): opens one,
        then every `renew_seconds` opens the next and closes the one it replaces. Without a replica
        to open one on, it closes the one it has and stops (the next session's `replenish` tries
        again)."""
        while True:
            spare = await self._open_spare(stage)
            old, self.spares[stage] = self.spares[stage], spare
            if old is not None:
                await old.stream.close()
            if spare is None:
                return
            await asyncio.sleep(self.renew_seconds)

    async def _open_spare(self, stage: int) -> Spare | None:
        """A spare on the least-loaded replica of `stage`, its opening answered; None if there is
        no replica or it does not open."""
        replica = await self.driver.serving_replica(stage)
        stream = None if replica is None else await self.connect(replica, answered=True)
        return None if stream is None else Spare(replica, stream)

    async def connect(self, replica: Replica, *, answered: bool = False) -> StageStream | None:
        """A stream to `replica`, its opening sent (and with `answered`, its reply read; otherwise
        it is read with the first step's). None if it cannot open (an unreachable replica is
        dropped) or, with `answered`, the stage refused the session."""
        stream = StageStream(replica.peer_id, self.frame_limit)
        timeout = self.driver.config.call_timeout
        try:
            await stream.open(self.driver.node.p2p, self.opening(), timeout=timeout)
            if answered:
                await stream.opened(timeout=timeout)
        except PeerUnreachable as error:
            await stream.close()
            self.driver.drop_replica(replica, str(error))
            return None
        except RemoteError as error:
            await stream.close()
            logger.info("%s refused a spare stream: %s", replica.short, error)
            return None
        except asyncio.CancelledError:
            await stream.close()
            raise
        return stream

    def relay(self, replica: Replica) -> StepRelay:
        if replica.ban_key not in self.relays:
            self.relays[replica.ban_key] = StepRelay(self.driver.config.call_timeout)
        return self.relays[replica.ban_key]

    def _forget_gone_relays(self) -> None:
        """Drop the idle relays of worker processes no longer routed (restarted, banned, gone): a
        gateway that runs for months keeps one relay per live replica, not one per worker process
        it ever served through."""
        routed = self.driver.routed_processes()
        for key in [key for key, relay in self.relays.items() if relay.idle and key not in routed]:
            del self.relays[key]

    def opening(self) -> dict:
        """What opens a stage's session: the driver's request document (model, and whatever proves
        whom this peer acts for), the same as every other RPC it makes."""
        return self.driver._request()

    async def close(self) -> None:
        """Stop keeping spares and close every spare (each is an open session on its stage)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._keepers.clear()
        spares = [spare for spare in self.spares if spare is not None]
        self.spares = [None] * self.spec.num_stages
        await asyncio.gather(*(spare.stream.close() for spare in spares))


class SwarmSession:
    """One completion's streams; `rounds`/`digests`: the committed round and state each stage serves."""

    def __init__(self, pipeline: SwarmPipeline, spares: list[Spare | None]) -> None:
        """`spares`: per stage, an open stream to start on (None: one is opened at the first step)."""
        self.pipeline, self.driver = pipeline, pipeline.driver
        stages = pipeline.spec.num_stages
        self.streams: list[tuple[Replica, StageStream] | None] = [
            None if spare is None else (spare.replica, spare.stream) for spare in spares
        ]
        for spare in spares:
            if spare is not None:
                self.driver.inference_load[spare.replica.peer_id] += 1
        self.sent: list[list[dict]] = [[] for _ in range(stages)]
        self.rounds: list[int] = [-1] * stages
        self.digests: list[str] = [""] * stages
        self._opens: dict[int, asyncio.Future] | None = None

    async def step(self, ids: list[int]) -> np.ndarray:
        """Feed the next positions through every stage; the float32 logits of the last one."""
        first = self._opens is None
        if first:  # every stage without a spare opens its stream at once, in the background
            self._opens = {
                stage: asyncio.ensure_future(self._open(stage))
                for stage, entry in enumerate(self.streams)
                if entry is None
            }
        tokens, output = encode_ids(ids, self.pipeline.spec), b""
        for stage in range(len(self.streams)):
            self.sent[stage].append({"tokens": tokens, "activation": output})
            output = await self._run(stage)
        if first:
            self.pipeline.replenish()
        return np.frombuffer(output, dtype="<f4")

    async def _run(self, stage: int) -> bytes:
        """The stage's output for its latest input, re-opening (and re-prefilling) its stream on a
        replica of the same weights as often as one fails."""
        refusals = 0
        if self._opens and stage in self._opens:
            await self._opens.pop(stage)
        while True:
            fresh = self.streams[stage] is None
            if fresh:
                await self._open(stage)
            replica, stream = self.streams[stage]
            try:
                output = (await self._reply(replica, stream, self.sent[stage], fresh)).get("output")
                if not isinstance(output, bytes):
                    error: Exception = RemoteError(f"{replica.short} answered a step without its output")
                elif self._same_weights(stage, stream.opening):
                    return output
                else:
                    error = RemoteError(f"{replica.short} serves other weights than this completion's")
            except (PeerUnreachable, RemoteError) as failure:
                error = failure
            await self._drop(stage, unreachable=isinstance(error, PeerUnreachable))
            if isinstance(error, PeerUnreachable):
                self.driver.drop_replica(replica, str(error))
            else:
                refusals += 1
                if refusals >= ATTEMPTS:
                    raise WorkerFailed(replica, str(error), unreachable=False)
            logger.warning(
                "stage %d: completion stream to %s failed (%s); re-prefilling on a replica",
                stage,
                replica.short,
                error,
            )

    def _same_weights(self, stage: int, opening: dict) -> bool:
        """Whether the stage serves this completion's weights (any, at its first opening)."""
        if self.digests[stage] not in ("", opening["digest"]):
            return False
        self.rounds[stage], self.digests[stage] = opening["round"], opening["digest"]
        return True

    async def _reply(self, replica: Replica, stream: StageStream, sent: list[dict], fresh: bool) -> dict:
        """The stage's answer to the latest step of `sent` (to all of them on a `fresh` stream, on
        that stream; else through the replica's relay, batched with other completions' steps). A
        stage silent for PROBE_SECONDS is asked on a fresh stream whether it is alive (`info`): a
        killed worker's stream can hang until the call timeout, its death should cost seconds."""
        if fresh or len(sent) == 1 or self.pipeline.open_sessions == 1:
            steps = sent if fresh else sent[-1:]
            pending = asyncio.ensure_future(stream.request({"steps": steps}, timeout=self._timeout))
        else:  # a step after the first on this stream: its opening (and session key) was read
            pending = self.pipeline.relay(replica).send(stream.opening["session"], stream, sent[-1:])
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=PROBE_SECONDS)
                if done:
                    return pending.result()
                await call(
                    self.driver.node.p2p,
                    replica.peer_id,
                    "info",
                    self.pipeline.opening(),
                    timeout=self.driver.config.info_timeout,
                )
        finally:
            if not pending.done():  # let it finish before the stream is closed under it
                pending.cancel()
                await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # retrieved: it is the failure being handled, or None

    async def _open(self, stage: int) -> None:
        """A stream to the least-loaded replica serving this completion's weights of `stage` (its
        opening is answered with the first reply)."""
        deadline = time.monotonic() + self.pipeline.wait_seconds
        while True:
            replica = await self.driver.serving_replica(stage, self.digests[stage] or None)
            stream = None if replica is None else await self.pipeline.connect(replica)
            if stream is not None:
                self.streams[stage] = (replica, stream)
                self.driver.inference_load[replica.peer_id] += 1
                return
            if time.monotonic() >= deadline:
                raise StageLost(stage)
            await asyncio.sleep(POLL_SECONDS)

    @property
    def _timeout(self) -> float:
        return self.driver.config.call_timeout

    async def _drop(self, stage: int, *, unreachable: bool = False) -> None:
        entry, self.streams[stage] = self.streams[stage], None
        if entry is not None:
            replica, stream = entry
            self.driver.inference_load[replica.peer_id] -= 1
            relay = self.pipeline.relays.get(replica.ban_key)
            if relay is not None:  # a batch of it may carry this session's step
                await relay.settled(stream, abandon=unreachable)
            await stream.close()

    async def close(self) -> None:
        """End every stream: each stage frees this completion's cache."""
        pending = list((self._opens or {}).values())
        for opening in pending:
            opening.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(self._drop(stage) for stage in range(len(self.streams))))
