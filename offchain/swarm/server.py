"""The stage server: one worker process serves one pipeline stage's StageTrainer over hivemind P2P.

Why our own servicer and not hivemind's `moe.Server`: its backends run the optimizer inside every
backward call, while a round here needs forward/backward per (step, micro-batch), one optimizer
step after all micro-batches of a step (summed in index order), round begin/abort/commit, state
transfer and replica averaging. `StageServer` is a `hivemind.p2p.ServicerBase`: each `rpc_*`
method becomes a P2P stream handler named `StageServer.rpc_*` on the worker's libp2p daemon.

Compute runs on one dedicated thread (the trainer is not thread-safe, and the event loop must
keep answering `info` and state requests while a micro-batch computes). Inference shares it: each
completion holds one `infer` stream open with a KV cache on this stage (offchain/swarm/sessions.py),
served from the committed round's weights (a copy: never the round in progress).

Round life cycle, driven by the driver:
  begin_round(r) -> forward / forward_backward / backward / apply_step ... -> end_round(r)
  (snapshot of the pre-average state) -> finish_round(r, replicas) (average with the other
  replicas' snapshots, commit r+1, persist, re-announce); abort_round(r) restores the round-start
  state (a stage lost its only worker: the round is redone, never counted twice); sync(peer)
  copies a peer's committed state (a restarted or lagging replica).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator  # noqa: UP035 - ServicerBase reads typing.AsyncIterator hints

import msgpack
from google.protobuf.wrappers_pb2 import BytesValue
from hivemind.p2p import P2P, P2PContext, ServicerBase

from offchain.data.dataset import Dataset
from offchain.durable import write_atomic
from offchain.model.checkpoint import average_state_bytes
from offchain.model.records import MessageHeader, Trace
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.swarm.authz import Authorizer, Binder, RateLimiter, Role, Unauthorized
from offchain.swarm.client import call
from offchain.swarm.datagate import DataGate
from offchain.swarm.identity import Identity, Received, verify
from offchain.swarm.sessions import SessionHost, SessionRefused
from offchain.swarm.wire import REQUEST_SECONDS, Limits, WireError, framed_chunks, join_chunks, pack, unpack

if TYPE_CHECKING:
    from offchain.swarm.keyshare import StageKeyKeeper

logger = logging.getLogger(__name__)

STATE_TIMEOUT = 120.0
REPLY_LINGER = 60.0
KEY_REQUESTS_PER_SECOND, KEY_REQUEST_BURST = 0.5, 5
"""Per peer: a key request costs the member chain reads, so a peer gets few of them."""


class Refused(ValueError):
    """A request this server will not execute; the reason goes back to the caller as one line."""


@dataclass(frozen=True)
class RoundState:
    """A stage's committed state: the state at the start of round `round` (rounds done so far)."""

    round: int
    state: bytes

    @cached_property
    def digest(self) -> str:
        """Hashed once: `info` and every completion's session name it (a stage state is megabytes)."""
        return hashlib.sha256(self.state).hexdigest()


class StateFile:
    """The last committed round state on disk, so a restarted worker resumes from it."""

    def __init__(self, directory: Path, spec: ModelSpec, model_id: int, stage: int) -> None:
        self.path = directory / f"model{model_id}-{spec.digest()[:16]}-stage{stage}.state"

    def load(self) -> RoundState | None:
        if not self.path.is_file():
            return None
        doc = msgpack.unpackb(self.path.read_bytes(), raw=False)
        return RoundState(doc["round"], doc["state"])

    def save(self, state: RoundState) -> None:
        """Plaintext weights: readable by this user only, and never half-written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = msgpack.packb({"round": state.round, "state": state.state}, use_bin_type=True)
        write_atomic(self.path, document, mode=0o600)


class StageServer(ServicerBase):
    """Serves one stage of one model; every message it emits is signed by `identity`. Every RPC is
    admitted by `authorizer` (offchain.swarm.authz.RULES) before it is read any further than its
    size limit, and every pipeline message by its signer; `binder` binds this server's address to
    its peer id in the state requests it sends (and the state it serves). Every training
    micro-batch's data is checked against `dataset` (None: the shipped one the spec names) before
    it is computed (offchain.swarm.datagate)."""

    def __init__(
        self,
        spec: ModelSpec,
        stage: int,
        identity: Identity,
        *,
        model_id: int,
        session: str,
        state_file: StateFile | None,
        authorizer: Authorizer,
        binder: Binder,
        on_commit: Callable[[], Awaitable[None]] | None = None,
        key_keeper: StageKeyKeeper | None = None,
        on_round: Callable[[RoundState, RoundState, Trace], Awaitable[None]] | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        self.spec, self.stage, self.identity = spec, stage, identity
        self.model_id, self.session = model_id, session
        self.spec_digest = spec.digest()
        self.authorizer, self.binder = authorizer, binder
        self.limits = Limits.of(spec, 0)
        self.key_requests = RateLimiter(KEY_REQUESTS_PER_SECOND, KEY_REQUEST_BURST)
        self.state_file = state_file
        self.on_commit = on_commit
        self.key_keeper = key_keeper
        self.on_round = on_round
        self.data_gate = DataGate(spec, dataset)
        self.p2p: P2P | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stage{stage}")
        self._jobs: set[Future] = set()  # submitted to the compute thread, perhaps not finished
        self.sessions = SessionHost(spec, stage, self._compute, inline=self._compute_idle)
        self.trainer: StageTrainer | None = None
        self.committed: RoundState | None = None
        self.previous: RoundState | None = None
        self.pending: RoundState | None = None
        self.in_round: int | None = None

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self, p2p: P2P, initial: RoundState | None) -> None:
        """Build the trainer (from `initial` or the spec's seed) and register the P2P handlers."""
        self.p2p = p2p
        state = initial.state if initial is not None else None
        self.trainer = await self._compute(
            partial(StageTrainer, self.spec, self.stage, state=state, model_id=self.model_id)
        )
        start_round = initial.round if initial is not None else 0
        self.committed = RoundState(start_round, await self._compute(self.trainer.state_bytes))
        self.limits = Limits.of(self.spec, len(self.committed.state))
        await self.add_p2p_handlers(p2p)

    def stop(self) -> None:
        """Finish the current computation; the handlers go away with the daemon (shut down next)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def adopt(self, state: RoundState) -> None:
        """Replace the committed state between rounds (an on-chain worker whose claim was rejected
        goes back to the last finalized checkpoint); the next begin_round loads it."""
        if self.in_round is not None:
            raise Refused(f"stage {self.stage} is in round {self.in_round}")
        await self._commit(state)
        self.previous = None
        logger.info("stage %d: adopted state %s as round %d", self.stage, state.digest[:16], state.round)

    async def _compute(self, fn: Callable[[], Any]) -> Any:
        job = self._executor.submit(fn)
        self._jobs = {other for other in self._jobs if not other.done()} | {job}
        return await asyncio.wrap_future(job)

    def _compute_idle(self) -> bool:
        """Whether the compute thread runs nothing and has nothing queued. A job's own future says
        so, not its caller: a cancelled caller leaves its job running to its end."""
        self._jobs = {job for job in self._jobs if not job.done()}
        return not self._jobs

    async def _commit(self, state: RoundState) -> None:
        self.previous, self.committed, self.in_round = self.committed, state, None
        if self.state_file is not None:
            await asyncio.to_thread(self.state_file.save, state)
        if self.on_commit is not None:
            await self.on_commit()

    # ---- request plumbing -------------------------------------------------------------------

    async def _serve(
        self,
        requests: AsyncIterator[BytesValue],
        context: P2PContext,
        method: str,
        handler: Callable[[dict], Awaitable[dict]],
    ) -> AsyncIterator[BytesValue]:
        peer = context.remote_id.to_base58()
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                request = unpack(await join_chunks(requests, self.limits.request(method)))
            self._check_model(request)
            if method == "stage_key" and not self.key_requests.allow(peer):
                raise Unauthorized("too many key requests from this peer: slow down")
            await asyncio.to_thread(self.authorizer.admit, method, peer, request.get("binding"), self.stage)
            reply = await handler(request)
        except Unauthorized as error:
            logger.warning("stage %d refused %s from peer %s: %s", self.stage, method, peer[-8:], error)
            reply = {"error": f"Unauthorized: {error}"}
        except TimeoutError:
            logger.warning(
                "stage %d refused %s from peer %s: request too slow", self.stage, method, peer[-8:]
            )
            reply = {"error": f"WireError: the request took more than {REQUEST_SECONDS:.0f}s"}
        except (Refused, WireError, ValueError, KeyError, TypeError) as error:
            logger.warning("stage %d refused %s from peer %s: %s", self.stage, method, peer[-8:], error)
            reply = {"error": f"{type(error).__name__}: {error}"}
        for chunk in framed_chunks(pack(reply)):
            yield chunk
        # Let the caller close the stream (see offchain.swarm.wire); this wait is cancelled then.
        await asyncio.sleep(REPLY_LINGER)

    def _check_model(self, request: dict) -> None:
        if request.get("model") != self.spec_digest or request.get("model_id") != self.model_id:
            raise Refused(
                f"this server trains model {self.model_id} spec {self.spec_digest[:16]}, the request is for "
                f"model {request.get('model_id')} spec {str(request.get('model'))[:16]}"
            )

    def _check_round(self, round_: int) -> None:
        if self.in_round != round_:
            raise Refused(f"stage {self.stage} is not in round {round_} (in round: {self.in_round})")

    async def _received(self, request: dict, direction: str) -> Received:
        """The request's pipeline message, signature checked, addressed to this worker, stage and op,
        bound to this deployment and signed by the stage (or driver) that may send it. A message for
        another worker is refused before it reaches the trace: a trace holds only messages addressed
        to the worker that claims it (audit F6)."""
        self._check_round(request["round"])
        received = verify(request["message"])
        header = received.header
        if header.stage != self.stage or header.direction != direction or header.round != request["round"]:
            raise Refused(f"message {header} is not a {direction} message to stage {self.stage}")
        own = self.identity.address.lower()
        if header.recipient != own:
            raise Refused(f"message addressed to worker {header.recipient}, this worker is {own}")
        await asyncio.to_thread(self.authorizer.check_message, header, received.signed.sender)
        return received

    async def _checked_source(
        self, received: Received, request: dict, tokens: bytes, targets: bytes | None = None
    ) -> tuple[tuple[int, int], ...]:
        """The micro-batch's source once its tokens (and targets) proved to be the data set's rows
        there: a driver's lie is refused before anything is computed or recorded (DataGate)."""
        source = self._source(request)
        await asyncio.to_thread(self.data_gate.check, received.header, source, tokens, targets)
        return source

    def _source(self, request: dict) -> tuple[tuple[int, int], ...] | None:
        """Where the driver says a micro-batch's rows start in the data set (filed in the trace,
        checked by this stage's DataGate and by verifiers): one (shard, offset) per row."""
        source = request.get("source")
        if source is None:
            return None
        rows = self.spec.micro_batch_size
        if not (
            isinstance(source, list)
            and len(source) == rows
            and all(isinstance(row, list) and len(row) == 2 for row in source)
            and all(isinstance(n, int) and 0 <= n < 2**63 for row in source for n in row)
        ):
            raise Refused(f"source must be {rows} [shard, offset] pairs of non-negative integers")
        return tuple((shard, offset) for shard, offset in source)

    async def _outgoing(self, received: Received, request: dict, stage: int, direction: str) -> MessageHeader:
        """The header of the message this stage sends on to `stage`, addressed to the worker the driver
        will call with it (`recipient`: the address the driver found registered for that peer id),
        which must be a member of that stage. Built before computing, so a refused request leaves
        nothing in the trace."""
        recipient = request.get("recipient")
        if not isinstance(recipient, str):
            raise Refused(f"the request names no recipient for its {direction} message to stage {stage}")
        header = replace(received.header, stage=stage, direction=direction, recipient=recipient.lower())
        if not await asyncio.to_thread(self.authorizer.facts.is_member, header.recipient, stage):
            raise Refused(f"recipient {header.recipient} is not a member of stage {stage}")
        return header

    # ---- stage RPCs -------------------------------------------------------------------------

    async def _info(self, request: dict) -> dict:
        return {
            "stage": self.stage,
            "session": self.session,
            "address": self.identity.address,
            "round": self.committed.round,
            "digest": self.committed.digest,
            "in_round": self.in_round,
            "sessions": len(self.sessions.sessions),
            "cached_tokens": self.sessions.cached_tokens,
            "passes": self.sessions.stats.passes,
            "pass_steps": self.sessions.stats.steps,
            "pass_held_seconds": self.sessions.stats.held_seconds,
            "pass_holds_expired": self.sessions.stats.holds_expired,
        }

    async def _forward(self, request: dict) -> dict:
        """Middle stages and stage 0: returns the signed forward message for stage s+1."""
        received = await self._received(request, "forward")
        if len(received.parts) != 2:
            raise Refused(f"a forward message to stage {self.stage} has (activation, tokens)")
        activation, tokens = received.parts
        header = await self._outgoing(received, request, self.stage + 1, "forward")
        signed = received.signed
        run = partial(
            self.trainer.forward,
            received.header,
            activation,
            tokens,
            signature=signed.signature,
            sender=signed.sender,
            source=await self._checked_source(received, request, tokens),
        )
        out = await self._compute(run)
        parts = [out, tokens]
        if self.stage + 1 == self.spec.num_stages - 1:
            parts.append(bytes(request["targets"]))
        return {"message": self.identity.sign(header, parts)}

    async def _open_session(self, peer: str, request: dict) -> RoundState:
        """A completion's opening request: for this model, from a peer that may call `infer` (a
        driver or gateway, by its binding); served from the committed round."""
        self._check_model(request)
        try:
            await asyncio.to_thread(self.authorizer.admit, "infer", peer, request.get("binding"), self.stage)
        except Unauthorized as error:
            logger.warning("stage %d refused infer from peer %s: %s", self.stage, peer[-8:], error)
            raise SessionRefused(f"Unauthorized: {error}") from None
        return self.committed

    async def _forward_backward(self, request: dict) -> dict:
        """Last stage: loss and backward; returns the loss and the signed grad message for stage s-1."""
        received = await self._received(request, "forward")
        if len(received.parts) != 3:
            raise Refused(
                f"a forward message to the last stage {self.stage} has (activation, tokens, targets)"
            )
        header = (
            None if self.stage == 0 else await self._outgoing(received, request, self.stage - 1, "backward")
        )
        signed = received.signed
        _, tokens, targets = received.parts
        run = partial(
            self.trainer.forward_backward,
            received.header,
            *received.parts,
            signature=signed.signature,
            sender=signed.sender,
            source=await self._checked_source(received, request, tokens, targets),
        )
        grad, loss = await self._compute(run)
        if header is None:
            return {"message": None, "loss": loss}
        return {"message": self.identity.sign(header, [grad]), "loss": loss}

    async def _backward(self, request: dict) -> dict:
        """Non-last stages: returns the signed grad message for stage s-1 (None on stage 0)."""
        received = await self._received(request, "backward")
        if len(received.parts) != 1:
            raise Refused(f"a backward message to stage {self.stage} has (grad,)")
        header = (
            None if self.stage == 0 else await self._outgoing(received, request, self.stage - 1, "backward")
        )
        signed = received.signed
        run = partial(
            self.trainer.backward,
            received.header,
            received.parts[0],
            signature=signed.signature,
            sender=signed.sender,
        )
        grad = await self._compute(run)
        if header is None:
            return {"message": None}
        return {"message": self.identity.sign(header, [grad])}

    async def _apply_step(self, request: dict) -> dict:
        self._check_round(request["round"])
        micro_batches = request.get("micro_batches")
        await self._compute(
            partial(self.trainer.apply_step, request["round"], request["step"], micro_batches)
        )
        return {"step": request["step"]}

    async def _begin_round(self, request: dict) -> dict:
        round_ = request["round"]
        if self.committed.round != round_:
            raise Refused(
                f"stage {self.stage} has committed {self.committed.round} rounds, cannot begin {round_}"
            )
        await self._restore()
        self.in_round = round_
        return {"digest": self.committed.digest}

    async def _abort_round(self, request: dict) -> dict:
        """Back to the start of round r, undoing the commit of r if it already happened."""
        if self.committed.round == request["round"] + 1 and self.previous is not None:
            await self._commit(self.previous)
            self.previous = None
        await self._restore()
        logger.info("stage %d: round %d aborted, back to its start state", self.stage, self.committed.round)
        return {"digest": self.committed.digest}

    async def _restore(self) -> None:
        await self._compute(partial(self.trainer.load_state, self.committed.state))
        self.trainer.trace = None
        self.in_round, self.pending = None, None

    async def _end_round(self, request: dict) -> dict:
        self._check_round(request["round"])
        self.pending = RoundState(request["round"] + 1, await self._compute(self.trainer.state_bytes))
        return {"digest": self.pending.digest}

    async def _finish_round(self, request: dict) -> dict:
        """Average with the other replicas' end-of-round snapshots, then commit round r+1.

        Idempotent: a retry (a replica died while the others averaged) returns the committed digest."""
        if self.in_round is None and self.committed.round == request["round"] + 1:
            return {"round": self.committed.round, "digest": self.committed.digest}
        self._check_round(request["round"])
        if self.pending is None or self.pending.round != request["round"] + 1:
            raise Refused("finish_round before end_round")
        states = []
        for peer in sorted(request["replicas"]):
            if peer == self.p2p.peer_id.to_base58():
                states.append(self.pending.state)
            else:
                reply = await self.fetch_state(peer, "pending")
                states.append(self._checked_state(reply, self.pending.round).state)
        merged = states[0] if len(states) == 1 else await self._compute(partial(self._average, states))
        parent, trace = self.committed, self.trainer.trace
        await self._commit(RoundState(self.pending.round, merged))
        if self.on_round is not None:
            await self.on_round(parent, self.committed, trace)
        logger.info(
            "stage %d: committed round %d, digest %s (%d replicas)",
            self.stage,
            self.committed.round,
            self.committed.digest[:16],
            len(states),
        )
        return {"round": self.committed.round, "digest": self.committed.digest}

    def _average(self, states: list[bytes]) -> bytes:
        merged = average_state_bytes(states)
        self.trainer.load_state(merged)
        return merged

    async def _sync(self, request: dict) -> dict:
        """Copy a peer's committed state (a restarted worker catching up with its replica)."""
        reply = await self.fetch_state(request["peer"], "committed")
        state = self._checked_state(reply, reply["round"])
        await self._compute(partial(self.trainer.load_state, state.state))
        await self._commit(state)
        logger.info(
            "stage %d: synced round %d state %s from %s",
            self.stage,
            state.round,
            state.digest[:16],
            request["peer"][-8:],
        )
        return {"round": state.round, "digest": state.digest}

    async def _state(self, request: dict) -> dict:
        """Only to members of this stage (the authorizer admitted the caller as one)."""
        state = self.pending if request["kind"] == "pending" else self.committed
        if state is None:
            raise Refused(f"stage {self.stage} has no {request['kind']} state")
        return {
            "stage": self.stage,
            "round": state.round,
            "digest": state.digest,
            "state": state.state,
            "binding": await asyncio.to_thread(self.binder.binding),
        }

    async def fetch_state(self, peer: str, kind: str) -> dict:
        """A state from `peer`, which must prove to be a member of this stage."""
        request = {**self._peer_request(kind), "binding": await asyncio.to_thread(self.binder.binding)}
        reply = await call(
            self.p2p, peer, "state", request, timeout=STATE_TIMEOUT, reply_limit=self.limits.state
        )
        try:
            source = await asyncio.to_thread(self.authorizer.identify, peer, reply.get("binding"))
            member = await asyncio.to_thread(self.authorizer.holds, source, Role.MEMBER, self.stage)
        except Unauthorized as error:
            raise Refused(f"state source {peer[-8:]}: {error}") from None
        if not member:
            raise Refused(f"state source {source} is not a member of stage {self.stage}")
        return reply

    async def _stage_key(self, request: dict) -> dict:
        """The stage key sealed to an entitled requester (offchain.swarm.keyshare); reads the chain
        in a thread of its own so a key request never waits behind a training step."""
        if self.key_keeper is None:
            raise Refused(f"stage {self.stage} serves without a chain and keeps no stage key")
        return await asyncio.to_thread(self.key_keeper.grant, request)

    def _peer_request(self, kind: str) -> dict:
        return {"model": self.spec_digest, "model_id": self.model_id, "kind": kind}

    def _checked_state(self, reply: dict, round_: int) -> RoundState:
        state = RoundState(reply["round"], reply["state"])
        if reply["stage"] != self.stage or state.round != round_ or state.digest != reply["digest"]:
            raise Refused(
                f"peer sent state of stage {reply['stage']} round {state.round}, wanted round {round_}"
            )
        return state

    # ---- P2P handlers (ServicerBase turns each rpc_* into `StageServer.rpc_*`) -------------------

    async def rpc_info(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "info", self._info):
            yield chunk

    async def rpc_forward(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "forward", self._forward):
            yield chunk

    async def rpc_infer(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        """A completion's stream: open, then its steps, its KV cache kept in between (sessions.py)."""
        caller = context.remote_id.to_base58()
        async for chunk in self.sessions.serve(requests, caller, partial(self._open_session, caller)):
            yield chunk

    async def rpc_forward_backward(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "forward_backward", self._forward_backward):
            yield chunk

    async def rpc_backward(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "backward", self._backward):
            yield chunk

    async def rpc_apply_step(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "apply_step", self._apply_step):
            yield chunk

    async def rpc_begin_round(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "begin_round", self._begin_round):
            yield chunk

    async def rpc_abort_round(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "abort_round", self._abort_round):
            yield chunk

    async def rpc_end_round(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "end_round", self._end_round):
            yield chunk

    async def rpc_finish_round(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "finish_round", self._finish_round):
            yield chunk

    async def rpc_sync(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "sync", self._sync):
            yield chunk

    async def rpc_state(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "state", self._state):
            yield chunk

    async def rpc_stage_key(
        self, requests: AsyncIterator[BytesValue], context: P2PContext
    ) -> AsyncIterator[BytesValue]:
        async for chunk in self._serve(requests, context, "stage_key", self._stage_key):
            yield chunk
