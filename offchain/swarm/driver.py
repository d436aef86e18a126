"""The driver: streams micro-batches through the stage servers it finds in the DHT.

Routing is client-side, as in SWARM/Petals: the driver calls stage 0, relays the signed
activation to stage 1, ..., gets loss and gradient from the last stage and relays gradients back
in reverse. It holds data, never weights. Per step it launches every micro-batch at once; each
server computes one request at a time, so stage s works on micro-batch m+1 while stage s+1
works on m (a GPipe-style fill), and the step ends with `apply_step` on every replica used.

Faults. A replica that errors or times out is banned (until it re-announces with a new session
or the ban expires) and each micro-batch of the current step that went through it is re-run,
keeping every other stage on the replica it used before (a re-run replaces that replica's
gradients for the micro-batch; another replica would count them twice). A stage with no usable
replica pauses training with one log line; once a worker appears, the round restarts from its
start state on every stage (`abort_round`), so no step is ever applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_utils import is_address
from hivemind.dht.node import DHTNode

from offchain.data.dataset import Dataset
from offchain.model.data import micro_batch
from offchain.model.records import MessageHeader
from offchain.model.spec import ModelSpec
from offchain.model.tokens import encode_tokens
from offchain.swarm.authz import Access
from offchain.swarm.client import PeerUnreachable, RemoteError, call
from offchain.swarm.discovery import lookup, stage_key
from offchain.swarm.identity import Identity
from offchain.swarm.shaping import LinkTable, Shaping
from offchain.swarm.wire import Limits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverConfig:
    spec: ModelSpec
    identity: Identity
    model_id: int = 0
    dataset: Dataset | None = None  # the spec's data set (its manifest_cid); None: the shipped one it names
    call_timeout: float = 60.0
    info_timeout: float = 5.0
    ban_seconds: float = 30.0
    poll_seconds: float = 1.0
    route_seconds: float = 10.0
    shaping: Shaping = field(default_factory=Shaping)
    access: Access | None = None
    """On-chain (Access.on_chain): the deployment the driver's messages and peer binding are bound
    to, chain time for the binding's expiry, and the members a replica must be one of. None:
    off-chain (chain id 0, `model_id`), every announced peer is tried."""


@dataclass(frozen=True)
class Replica:
    """A live stage server as its `info` RPC described it."""

    peer_id: str
    session: str
    address: str
    round: int
    digest: str

    @property
    def ban_key(self) -> tuple[str, str]:
        return (self.peer_id, self.session)

    @property
    def short(self) -> str:
        return self.peer_id[-8:]


@dataclass
class RoundResult:
    """A committed round: per-step mean losses and seconds since the round began, final digests."""

    round: int
    losses: list[float]
    step_seconds: list[float]
    digests: list[str]
    seconds: float
    replicas: list[int]


def _recipient(replica: Replica) -> str:
    """The address a message for `replica` is addressed to (MessageHeader.recipient): the account
    its `info` named, which on-chain `discover` checked is the one registered for its peer id."""
    return replica.address.lower()


class WorkerFailed(RuntimeError):
    """A call to `replica` failed; `unreachable` if the worker itself did not answer."""

    def __init__(self, replica: Replica, reason: str, *, unreachable: bool) -> None:
        super().__init__(reason)
        self.replica = replica
        self.unreachable = unreachable


class StageLost(RuntimeError):
    """Every replica of a stage failed during a round: the round must be redone from its start."""

    def __init__(self, stage: int) -> None:
        super().__init__(f"stage {stage} has no live worker")
        self.stage = stage


@dataclass
class Stats:
    """Counters for the summary and the benchmarks."""

    forward_bytes: list[int]
    backward_bytes: list[int]
    micro_batches: int = 0
    retried_micro_batches: int = 0
    bans: int = 0
    aborted_rounds: int = 0
    pauses: int = 0


class Driver:
    def __init__(self, config: DriverConfig, node: DHTNode) -> None:
        self.config, self.node, self.spec = config, node, config.spec
        self.spec_digest = config.spec.digest()
        self.num_stages = config.spec.num_stages
        self.access = config.access or Access.off_chain(config.model_id, ())
        self.domain = self.access.domain
        self.binder = self.access.binder(config.identity, node.peer_id.to_base58())
        self.limits = Limits.of(config.spec, 0)
        self.links = LinkTable(config.shaping) if config.shaping.active else None
        self.banned: dict[tuple[str, str], float] = {}
        self.inference_load: Counter[str] = Counter()
        self.inference_routes: dict[int, tuple[float, list[Replica]]] = {}
        self._refreshing: dict[int, asyncio.Task] = {}
        boundaries = max(self.num_stages - 1, 0)
        self.stats = Stats(forward_bytes=[0] * boundaries, backward_bytes=[0] * boundaries)

    # ---- RPC plumbing -------------------------------------------------------------------------

    def _request(self, **fields: object) -> dict:
        """A request to a stage server, with the peer binding that proves whom this peer acts for."""
        binding = self.binder.binding()
        return {"model": self.spec_digest, "model_id": self.config.model_id, "binding": binding, **fields}

    async def _call(
        self, replica: Replica, method: str, timeout: float | None = None, **fields: object
    ) -> dict:
        try:
            return await call(
                self.node.p2p,
                replica.peer_id,
                method,
                self._request(**fields),
                timeout=timeout or self.config.call_timeout,
                links=self.links,
                reply_limit=self.limits.reply(method),
            )
        except PeerUnreachable as error:
            raise WorkerFailed(replica, str(error), unreachable=True) from None
        except RemoteError as error:
            raise WorkerFailed(replica, str(error), unreachable=False) from None

    def _ban(self, replica: Replica, reason: str) -> None:
        if self._is_banned(replica):
            return
        self.banned[replica.ban_key] = time.monotonic() + self.config.ban_seconds
        self.stats.bans += 1
        logger.warning("banned worker %s for %.0fs: %s", replica.short, self.config.ban_seconds, reason)

    def _is_banned(self, replica: Replica) -> bool:
        until = self.banned.get(replica.ban_key)
        return until is not None and until > time.monotonic()

    # ---- discovery ----------------------------------------------------------------------------

    async def discover(self, stage: int) -> list[Replica]:
        """Live, unbanned replicas of `stage`, from the DHT, confirmed by their `info` RPC and, on-chain,
        by their membership: anyone can announce itself under a stage, and a stranger in a route
        would see the data and make honest neighbours refuse its messages."""
        records = await lookup(self.node, stage_key(self.spec_digest, self.config.model_id, stage))

        async def info(peer_id: str) -> Replica | None:
            try:
                reply = await self.stage_info(Replica(peer_id, "", "", -1, ""))
            except WorkerFailed:
                return None
            if reply["stage"] != stage or not is_address(reply["address"]):
                return None
            replica = Replica(peer_id, reply["session"], reply["address"], reply["round"], reply["digest"])
            if self._is_banned(replica) or not await asyncio.to_thread(self._is_member, replica, stage):
                return None
            return replica

        found = await asyncio.gather(*(info(record.peer_id) for record in records))
        return [replica for replica in found if replica is not None]

    async def stage_info(self, replica: Replica) -> dict:
        """The replica's `info` reply: its stage, round and digest, its open completion sessions and
        its serving pass counters (`passes`, `pass_steps`: how well continuous batching shares passes)."""
        return await self._call(replica, "info", timeout=self.config.info_timeout)

    def _is_member(self, replica: Replica, stage: int) -> bool:
        """On-chain: the peer id is the one a member of `stage` registered, and the member's address is
        the one the replica signs with. Off-chain: every listed peer is taken at its word."""
        facts = self.access.facts
        if not facts.registers_peers:
            return True
        account = facts.account_of_peer(replica.peer_id)
        member = account == replica.address.lower() and facts.is_member(account, stage)
        if not member:
            logger.warning(
                "ignoring %s announced under stage %d: not a member's registered peer", replica.short, stage
            )
        return member

    async def _inference_replicas(self, stage: int) -> list[Replica]:
        """A stage's replicas for inference, discovered once and reused across completions: after
        `route_seconds` they are re-discovered in the background (a completion does not wait for a
        DHT lookup), and in the foreground only once every cached replica has failed."""
        cached = self.inference_routes.get(stage)
        usable = [] if cached is None else [r for r in cached[1] if not self._is_banned(r)]
        if not usable:
            return await self._rediscover(stage)
        if cached[0] <= time.monotonic() and stage not in self._refreshing:
            task = asyncio.create_task(self._rediscover(stage))
            self._refreshing[stage] = task
            task.add_done_callback(lambda _: self._refreshing.pop(stage, None))
        return usable

    async def _rediscover(self, stage: int) -> list[Replica]:
        replicas = await self.discover(stage)
        if replicas:
            self.inference_routes[stage] = (time.monotonic() + self.config.route_seconds, replicas)
        else:
            self.inference_routes.pop(stage, None)
        return replicas

    async def serving_replica(self, stage: int, digest: str | None = None) -> Replica | None:
        """The usable replica of `stage` with the fewest completions open through this driver (one
        serving the weights `digest` when given: a completion's stages never change weights halfway)."""
        replicas = [
            replica
            for replica in await self._inference_replicas(stage)
            if digest is None or replica.digest == digest
        ]
        return min(replicas, key=lambda r: (self.inference_load[r.peer_id], r.peer_id), default=None)

    def still_routed(self, stage: int, replica: Replica) -> bool:
        """Whether `replica` is, as last discovered, still one of `stage`'s inference replicas (the
        same worker session serving the same weights) and not banned: a stream opened to it earlier
        may still start a completion."""
        cached = self.inference_routes.get(stage)
        return cached is not None and replica in cached[1] and not self._is_banned(replica)

    def routed_processes(self) -> set[tuple[str, str]]:
        """The worker processes (`Replica.ban_key`) of every stage's inference routes as last
        discovered, banned ones left out: what a new completion may be routed to."""
        return {
            replica.ban_key
            for _, replicas in self.inference_routes.values()
            for replica in replicas
            if not self._is_banned(replica)
        }

    def drop_replica(self, replica: Replica, reason: str) -> None:
        """A replica that failed a completion's stream: banned, so no completion picks it again."""
        self._ban(replica, reason)

    async def discover_all(self) -> list[list[Replica]]:
        return list(await asyncio.gather(*(self.discover(stage) for stage in range(self.num_stages))))

    async def current_round(self) -> int:
        """The round the swarm is at: the most advanced committed round any stage reports."""
        replicas = await self._wait_for_every_stage()
        return max(replica.round for stage in replicas for replica in stage)

    async def _wait_for_every_stage(self) -> list[list[Replica]]:
        """Discovery until every stage has a live worker; logs the pause once and the resume."""
        paused_on: set[int] = set()
        while True:
            replicas = await self.discover_all()
            missing = {stage for stage, found in enumerate(replicas) if not found}
            if not missing:
                if paused_on:
                    logger.info("every stage has a live worker again: training resumes")
                return replicas
            if missing != paused_on:
                self.stats.pauses += 1 if not paused_on else 0
                logger.warning(
                    "training paused: no live worker for stage(s) %s of model %d; waiting for a worker",
                    ", ".join(map(str, sorted(missing))),
                    self.config.model_id,
                )
                paused_on = missing
            await asyncio.sleep(self.config.poll_seconds)

    # ---- rounds -------------------------------------------------------------------------------

    async def prepare_round(self, round_: int) -> list[list[Replica]]:
        """Every stage's replicas for `round_`: laggards synced from a replica at `round_`, then begun."""
        while True:
            replicas = await self._wait_for_every_stage()
            members: list[list[Replica]] = []
            for stage, found in enumerate(replicas):
                members.append(await self._align_stage(stage, found, round_))
            if any(not stage_members for stage_members in members):
                await asyncio.sleep(self.config.poll_seconds)
                continue
            begun = await self._on_each(members, "begin_round", round=round_)
            if all(begun):
                return begun
            await asyncio.sleep(self.config.poll_seconds)

    async def _align_stage(self, stage: int, found: list[Replica], round_: int) -> list[Replica]:
        at_round = [replica for replica in found if replica.round == round_]
        if not at_round:
            logger.warning(
                "stage %d: no worker holds the state of round %d (workers at rounds %s); waiting",
                stage,
                round_,
                sorted({replica.round for replica in found}),
            )
            return []
        canonical = Counter(replica.digest for replica in at_round).most_common(1)[0][0]
        source = next(replica for replica in at_round if replica.digest == canonical)
        aligned = []
        for replica in found:
            if replica.round == round_ and replica.digest == canonical:
                aligned.append(replica)
                continue
            try:
                reply = await self._call(replica, "sync", peer=source.peer_id)
            except WorkerFailed as failure:
                self._ban(replica, f"sync failed: {failure}")
                continue
            logger.info(
                "stage %d: worker %s synced round %d state from %s",
                stage,
                replica.short,
                round_,
                source.short,
            )
            aligned.append(
                Replica(replica.peer_id, replica.session, replica.address, reply["round"], reply["digest"])
            )
        # Every replica in a round trains at least one micro-batch per step; any extra ones sit it out.
        return aligned[: self.spec.micro_batches]

    async def _on_each(
        self, members: list[list[Replica]], method: str, **fields: object
    ) -> list[list[Replica]]:
        """Call `method` on every member; returns per stage the members that succeeded (others banned)."""

        async def one(replica: Replica) -> Replica | None:
            try:
                await self._call(replica, method, **fields)
            except WorkerFailed as failure:
                self._ban(replica, str(failure))
                return None
            return replica

        results = await asyncio.gather(*(asyncio.gather(*(one(r) for r in stage)) for stage in members))
        return [[replica for replica in stage if replica is not None] for stage in results]

    async def run_round(
        self, round_: int, on_step: Callable[[int, int, float], None] | None = None
    ) -> RoundResult:
        """Train round `round_` to its commit; a lost stage aborts it and it starts over."""
        while True:
            members = await self.prepare_round(round_)
            started = time.monotonic()
            try:
                losses, step_seconds = [], []
                for step in range(self.spec.round_steps):
                    loss = await self.run_step(round_, step, members)
                    losses.append(loss)
                    step_seconds.append(time.monotonic() - started)
                    if on_step is not None:
                        on_step(round_, step, loss)
                digests = await self.finish_round(round_, members)
            except StageLost as lost:
                self.stats.aborted_rounds += 1
                logger.warning(
                    "stage %d lost its last worker during round %d: every stage goes back to the round's "
                    "start state and the round is redone once a worker is back (no step counts twice)",
                    lost.stage,
                    round_,
                )
                await self._on_each(members, "abort_round", round=round_)
                continue
            seconds = time.monotonic() - started
            return RoundResult(round_, losses, step_seconds, digests, seconds, [len(m) for m in members])

    async def run_step(self, round_: int, step: int, members: list[list[Replica]]) -> float:
        """All micro-batches of one step through the pipeline, then apply_step on every replica used."""
        routes: dict[int, list[Replica]] = {}
        losses: dict[int, float] = {}
        pending = set(range(self.spec.micro_batches))
        while pending:
            for mb in sorted(pending):
                routes[mb] = self._route(members, routes.get(mb), routes)
            results = await asyncio.gather(
                *(self._micro_batch(round_, step, mb, routes[mb]) for mb in sorted(pending)),
                return_exceptions=True,
            )
            for mb, result in zip(sorted(pending), results, strict=True):
                if isinstance(result, WorkerFailed):
                    self._ban(result.replica, str(result))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    losses[mb] = result
            redo = {mb for mb, route in routes.items() if any(self._is_banned(replica) for replica in route)}
            pending = redo | (set(range(self.spec.micro_batches)) - set(losses))
            if pending:
                self.stats.retried_micro_batches += len(pending)
                for mb in pending:
                    losses.pop(mb, None)
                logger.info("round %d step %d: re-running micro-batch(es) %s", round_, step, sorted(pending))
        await self._apply_step(round_, step, routes)
        self.stats.micro_batches += self.spec.micro_batches
        return sum(losses[mb] for mb in sorted(losses)) / len(losses)

    async def _apply_step(self, round_: int, step: int, routes: dict[int, list[Replica]]) -> None:
        """apply_step on every replica used, naming the micro-batches it trained when it did not train all."""

        async def one(replica: Replica, trained: list[int]) -> bool:
            subset = None if len(trained) == self.spec.micro_batches else trained
            try:
                await self._call(replica, "apply_step", round=round_, step=step, micro_batches=subset)
            except WorkerFailed as failure:
                self._ban(replica, str(failure))
                return False
            return True

        for stage in range(self.num_stages):
            trained: dict[Replica, list[int]] = {}
            for mb in sorted(routes):
                trained.setdefault(routes[mb][stage], []).append(mb)
            if not any(await asyncio.gather(*(one(replica, mbs) for replica, mbs in trained.items()))):
                raise StageLost(stage)

    def _route(
        self, members: list[list[Replica]], previous: list[Replica] | None, routes: dict[int, list[Replica]]
    ) -> list[Replica]:
        """Keep each stage's previous replica while it is usable; else the least-loaded usable one."""
        route = []
        for stage, replicas in enumerate(members):
            usable = [replica for replica in replicas if not self._is_banned(replica)]
            if not usable:
                raise StageLost(stage)
            if previous is not None and previous[stage] in usable:
                route.append(previous[stage])
                continue
            load = Counter(r[stage].peer_id for r in routes.values())
            route.append(min(usable, key=lambda replica: (load[replica.peer_id], replica.peer_id)))
        return route

    async def _micro_batch(self, round_: int, step: int, mb: int, route: list[Replica]) -> float:
        """Forward through every stage, loss and backward at the last, gradients back to stage 0."""
        spec, last = self.spec, self.num_stages - 1
        tokens, targets, source = micro_batch(spec, self.config.dataset, round_, step, mb)
        token_bytes, target_bytes = encode_tokens(tokens, spec), encode_tokens(targets, spec)
        parts = [b"", token_bytes, target_bytes] if last == 0 else [b"", token_bytes]
        chain_id, ledger = self.domain.deployment
        header = MessageHeader(
            self.config.model_id, 0, round_, step, mb, "forward", chain_id, ledger, _recipient(route[0])
        )
        message = self.config.identity.sign(header, parts)
        where = {"round": round_, "step": step, "micro_batch": mb, "source": source}
        for stage in range(last):
            reply = await self._call(
                route[stage],
                "forward",
                message=message,
                targets=target_bytes,
                recipient=_recipient(route[stage + 1]),
                **where,
            )
            message = self._checked(reply, route[stage])
            self.stats.forward_bytes[stage] += len(message["parts"][0])
        back_to = _recipient(route[last - 1]) if last > 0 else None
        reply = await self._call(route[last], "forward_backward", message=message, recipient=back_to, **where)
        loss = float(reply["loss"])
        for stage in range(last - 1, -1, -1):
            message = self._checked(reply, route[stage + 1])
            self.stats.backward_bytes[stage] += len(message["parts"][0])
            back_to = _recipient(route[stage - 1]) if stage > 0 else None
            reply = await self._call(route[stage], "backward", message=message, recipient=back_to, **where)
        return loss

    @staticmethod
    def _checked(reply: dict, replica: Replica) -> dict:
        message = reply.get("message")
        if message is None or message.get("sender", "").lower() != replica.address.lower():
            raise WorkerFailed(
                replica, "reply is not a message signed by the worker's announced address", unreachable=False
            )
        return message

    async def finish_round(self, round_: int, members: list[list[Replica]]) -> list[str]:
        """Snapshot every replica, average same-stage replicas, commit; returns each stage's digest.

        No stage commits before every stage has its end-of-round snapshot; a stage lost after
        that makes `abort_round` take the stages that did commit back to the round's start."""
        members = [[r for r in stage if not self._is_banned(r)] for stage in members]
        ended = await self._on_each(members, "end_round", round=round_)
        for stage, replicas in enumerate(ended):
            if not replicas:
                raise StageLost(stage)
        return list(
            await asyncio.gather(
                *(self._finish_stage(round_, s, replicas) for s, replicas in enumerate(ended))
            )
        )

    async def _finish_stage(self, round_: int, stage: int, replicas: list[Replica]) -> str:
        while True:
            peers = [replica.peer_id for replica in replicas]
            results = await asyncio.gather(
                *(self._call(r, "finish_round", round=round_, replicas=peers) for r in replicas),
                return_exceptions=True,
            )
            failed = [res for res in results if isinstance(res, BaseException)]
            if not failed:
                break
            if any(not isinstance(res, WorkerFailed) for res in failed):
                raise next(res for res in failed if not isinstance(res, WorkerFailed))
            # A dead replica makes its live peers' averaging fail too: ban only the dead ones if any.
            unreachable = [res for res in failed if res.unreachable]
            for res in unreachable or failed:
                self._ban(res.replica, f"round-end averaging: {res}")
            replicas = [r for r in replicas if not self._is_banned(r)]
            if not replicas:
                raise StageLost(stage)
        digests = {result["digest"] for result in results}
        if len(digests) != 1:
            raise RuntimeError(f"stage {stage} replicas committed different digests: {sorted(digests)}")
        return digests.pop()
