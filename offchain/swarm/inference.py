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
No such replica within the wait: StageLost.

Batches. A completion's first step (its prompt) and a re-prefill go out on its own stream; its
one-token steps go through the pipeline's `StepRelay` of that replica, which sends the steps of all
the gateway's completions bound for it in the same turn of the event loop as one frame
(offchain/swarm/relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import numpy as np

from offchain.model.tokens import encode_ids
from offchain.swarm.client import PeerUnreachable, RemoteError, StageStream, call
from offchain.swarm.driver import Driver, Replica, StageLost, WorkerFailed
from offchain.swarm.relay import StepRelay

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # refusals of one step by live replicas before the completion fails
POLL_SECONDS = 0.5
PROBE_SECONDS = 2.0


class SwarmPipeline:
    """Completions over the replicas `driver` finds (its discovery, load counts and bans)."""

    def __init__(self, driver: Driver, *, wait_seconds: float = 30.0) -> None:
        self.driver, self.wait_seconds = driver, wait_seconds
        self.spec = driver.spec
        widest = 4 * max(self.spec.config.hidden_size, self.spec.config.vocab_size) + 64
        self.frame_limit = self.spec.context * widest + (1 << 20)
        self.relays: dict[str, StepRelay] = {}  # per replica (peer id)

    def relay(self, replica: Replica) -> StepRelay:
        if replica.peer_id not in self.relays:
            self.relays[replica.peer_id] = StepRelay(self.driver.config.call_timeout)
        return self.relays[replica.peer_id]

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SwarmSession]:
        session = SwarmSession(self)
        try:
            yield session
        finally:
            await session.close()


class SwarmSession:
    """One completion's streams; `rounds`/`digests`: the committed round and state each stage serves."""

    def __init__(self, pipeline: SwarmPipeline) -> None:
        self.pipeline, self.driver = pipeline, pipeline.driver
        stages = pipeline.spec.num_stages
        self.streams: list[tuple[Replica, StageStream] | None] = [None] * stages
        self.sent: list[list[dict]] = [[] for _ in range(stages)]
        self.rounds: list[int] = [-1] * stages
        self.digests: list[str] = [""] * stages
        self._opens: dict[int, asyncio.Future] | None = None

    async def step(self, ids: list[int]) -> np.ndarray:
        """Feed the next positions through every stage; the float32 logits of the last one."""
        if self._opens is None:  # the first step: every stage's stream opens at once, in the background
            self._opens = {
                stage: asyncio.ensure_future(self._open(stage)) for stage in range(len(self.streams))
            }
        tokens, output = encode_ids(ids, self.pipeline.spec), b""
        for stage in range(len(self.streams)):
            self.sent[stage].append({"tokens": tokens, "activation": output})
            output = await self._run(stage)
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
                output = bytes((await self._reply(replica, stream, self.sent[stage], fresh))["output"])
                if self._same_weights(stage, stream.opening):
                    return output
                error: Exception = RemoteError(f"{replica.short} serves other weights than this completion's")
            except (PeerUnreachable, RemoteError) as failure:
                error = failure
            await self._drop(stage)
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
        session = stream.opening.get("session") if stream.opening else None
        if fresh or session is None:
            pending = asyncio.ensure_future(stream.request({"steps": sent}, timeout=self._timeout))
        else:
            pending = self.pipeline.relay(replica).send(session, stream, sent[-1:])
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=PROBE_SECONDS)
                if done:
                    return pending.result()
                await call(
                    self.driver.node.p2p,
                    replica.peer_id,
                    "info",
                    self._opening(),
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
            if replica is not None:
                stream = StageStream(replica.peer_id, self.pipeline.frame_limit)
                try:
                    await stream.open(self.driver.node.p2p, self._opening(), timeout=self._timeout)
                except PeerUnreachable as error:
                    await stream.close()
                    self.driver.drop_replica(replica, str(error))
                else:
                    self.streams[stage] = (replica, stream)
                    self.driver.inference_load[replica.peer_id] += 1
                    return
            if time.monotonic() >= deadline:
                raise StageLost(stage)
            await asyncio.sleep(POLL_SECONDS)

    @property
    def _timeout(self) -> float:
        return self.driver.config.call_timeout

    def _opening(self) -> dict:
        """What opens a stage's session: the driver's request document (model, and whatever proves
        whom this peer acts for), the same as every other RPC it makes."""
        return self.driver._request()

    async def _drop(self, stage: int) -> None:
        entry, self.streams[stage] = self.streams[stage], None
        if entry is not None:
            replica, stream = entry
            self.driver.inference_load[replica.peer_id] -= 1
            await self.pipeline.relay(replica).settled(stream)
            await stream.close()

    async def close(self) -> None:
        """End every stream: each stage frees this completion's cache."""
        pending = list((self._opens or {}).values())
        for opening in pending:
            opening.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(self._drop(stage) for stage in range(len(self.streams))))
