"""`pm worker run`: join the swarm, load or fetch this stage's state, serve it until SIGTERM.

An on-chain worker (offchain/worker/daemon.py) plugs in as a `StageRole`: it chooses the initial state
once the node is up, hears about every finished round, and runs its ledger loop beside the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hivemind.dht.node import DHTNode

from offchain.data.dataset import Dataset
from offchain.model.records import Trace
from offchain.model.spec import ModelSpec
from offchain.swarm.authz import Access
from offchain.swarm.client import PeerUnreachable, RemoteError
from offchain.swarm.discovery import Announcement, announce, announce_forever, lookup, stage_key
from offchain.swarm.identity import Identity, p2p_identity
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, stop_on_signals, visible_maddrs
from offchain.swarm.server import Refused, RoundState, StageServer, StateFile

if TYPE_CHECKING:
    from offchain.swarm.keyshare import StageKeyKeeper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    spec: ModelSpec
    stage: int
    identity: Identity
    network: NetworkConfig
    access: Access
    model_id: int = 0
    state_dir: Path | None = None
    dataset: Dataset | None = None  # the spec's data set (worker's store); None: the shipped one it names


class StageRole(Protocol):
    """What a daemon adds to serving a stage (the on-chain worker in offchain/worker/daemon.py)."""

    key_keeper: StageKeyKeeper | None  # set by start(): the server grants the stage key with it

    async def start(self, node: DHTNode) -> RoundState | None:
        """Runs once the node is up (the peer id exists); returns the state to serve from."""
        ...

    async def on_round(self, parent: RoundState, committed: RoundState, trace: Trace) -> None:
        """A round was committed: `parent` is the state it started from, `trace` what this replica did."""
        ...

    async def run(self, server: StageServer, stop: asyncio.Event) -> None:
        """Background work beside the server; returns soon after `stop` is set."""
        ...


async def catch_up(node: DHTNode, server: StageServer, key: str) -> RoundState | None:
    """The most advanced committed state among this stage's live replicas, if any is ahead of 0
    (each source must prove to be a member of the stage: StageServer.fetch_state)."""
    for record in sorted(await lookup(node, key), key=lambda r: -r.round):
        if record.round == 0:
            break
        try:
            reply = await server.fetch_state(record.peer_id, "committed")
        except (PeerUnreachable, RemoteError, Refused) as error:
            logger.warning("could not fetch state from %s: %s", record.peer_id[-8:], error)
            continue
        state = RoundState(reply["round"], reply["state"])
        if state.digest == reply["digest"]:
            logger.info(
                "synced round %d state %s from replica %s",
                state.round,
                state.digest[:16],
                record.peer_id[-8:],
            )
            return state
    return None


def _check_registered_peer(config: WorkerConfig, peer_id: str) -> None:
    """On-chain, peers know a member by the peer id it registered at `join`: say so loudly if this
    node's is another one (its libp2p key file was lost or replaced), since every peer will refuse it."""
    facts = config.access.facts
    if facts.registers_peers and facts.account_of_peer(peer_id) != config.identity.address.lower():
        logger.error(
            "this node's peer id %s is not the one %s registered at join: other members and drivers "
            "will refuse it; restore %s or leave and join again",
            peer_id,
            config.identity.address,
            config.state_dir / "p2p.key" if config.state_dir else "its libp2p key file",
        )


async def serve_stage(config: WorkerConfig, role: StageRole | None = None) -> None:
    """Run one stage server until SIGTERM/SIGINT; always leaves the DHT and stops its daemon."""
    stop = stop_on_signals()
    spec, stage = config.spec, config.stage
    key = stage_key(spec.digest(), config.model_id, stage)
    state_file = StateFile(config.state_dir, spec, config.model_id, stage) if config.state_dir else None
    identity_path = p2p_identity(config.state_dir / "p2p.key") if config.state_dir else None
    node = await start_node(config.network, identity_path=identity_path)
    server: StageServer | None = None
    announcer: asyncio.Task | None = None
    background: asyncio.Task | None = None
    try:
        peer_id = node.peer_id.to_base58()
        if role is not None:
            initial = await role.start(node)
        elif (initial := state_file.load() if state_file is not None else None) is not None:
            logger.info("resuming stage %d from its round %d state on disk", stage, initial.round)

        def current() -> Announcement:
            return Announcement(peer_id, session, config.identity.address, server.committed.round)

        async def on_commit() -> None:
            await announce(node, key, current())

        session = secrets.token_hex(4)
        server = StageServer(
            spec,
            stage,
            config.identity,
            model_id=config.model_id,
            session=session,
            state_file=state_file,
            on_commit=on_commit,
            key_keeper=role.key_keeper if role is not None else None,
            on_round=role.on_round if role is not None else None,
            authorizer=config.access.authorizer(),
            binder=config.access.binder(config.identity, peer_id),
            dataset=config.dataset,
        )
        await server.start(node.p2p, initial)
        await asyncio.to_thread(_check_registered_peer, config, peer_id)
        if role is None and initial is None and (caught_up := await catch_up(node, server, key)) is not None:
            await server.adopt(caught_up)
        announcer = asyncio.create_task(announce_forever(node, key, current, stop))
        if role is not None:
            background = asyncio.create_task(role.run(server, stop))
        logger.info(
            "serving stage %d of model %d (spec %s) at round %d as %s address %s; maddrs %s",
            stage,
            config.model_id,
            spec.digest()[:16],
            server.committed.round,
            peer_id,
            config.identity.address,
            " ".join(await visible_maddrs(node)),
        )
        await stop.wait()
        logger.info("stage %d: shutting down", stage)
    finally:
        stop.set()
        if background is not None:  # it finishes its current step (a transaction in flight) first
            await background
        if announcer is not None:  # its DHT store may never return once the daemon is gone
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        if server is not None:
            server.stop()
        await shutdown_node(node)
