"""A swarm process's presence on the network: one hivemind DHT node with its own libp2p daemon.

The DHT runs inside the process's event loop (`DHTNode`), not in hivemind's forked `DHT`
process: one fewer process to clean up, and a `kill -9` of the worker also takes its p2pd down
(the daemon exits when its client's control socket closes), so a crash leaves nothing behind.

A node needs one live initial peer only to join: once in, it knows the swarm's other peers, and
the death of the peer it joined through changes nothing. A process that starts (or restarts)
while none of its initial peers answers waits for one to come back (a restarted peer keeps its
address when it keeps its port and identity file), saying so in its log, and gives up after
`JOIN_PATIENCE_S` with one line naming the peers it tried.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hivemind.dht.node import DHTNode
from hivemind.p2p.p2p_daemon_bindings.control import P2PDaemonError

from offchain.errors import UserError

logger = logging.getLogger(__name__)

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
SHUTDOWN_TIMEOUT = 10.0
JOIN_PATIENCE_S = 120.0  # how long a starting node waits for one of its initial peers to answer
JOIN_RETRY_S = 5.0
NO_PEER_ANSWERED = "failed to connect to bootstrap peers"  # p2pd's words when none of them answers


@dataclass(frozen=True)
class NetworkConfig:
    """Where to listen, what to announce, whom to bootstrap from (all libp2p multiaddrs)."""

    initial_peers: Sequence[str] = ()
    host_maddrs: Sequence[str] = LOOPBACK
    announce_maddrs: Sequence[str] = ()


def network_config(
    initial_peers: list[str] | None, host_maddrs: list[str] | None, announce_maddrs: list[str] | None
) -> NetworkConfig:
    """The network settings of a command line (loopback on any port unless --host-maddrs says otherwise)."""
    return NetworkConfig(
        initial_peers=tuple(initial_peers or ()),
        host_maddrs=tuple(host_maddrs or LOOPBACK),
        announce_maddrs=tuple(announce_maddrs or ()),
    )


async def start_node(
    network: NetworkConfig,
    *,
    client_mode: bool = False,
    identity_path: Path | None = None,
    patience_s: float = JOIN_PATIENCE_S,
) -> DHTNode:
    """Join (or found, without initial peers) the DHT; one clear error if it cannot.

    `identity_path`: a libp2p key file (offchain.swarm.identity.p2p_identity) for a peer id that
    outlives the process; a fresh one otherwise. hivemind's check that no other live peer uses the
    identity costs a second daemon start and is skipped: the peer id's owner is the one process
    that holds the file. `patience_s`: how long to wait for one initial peer to answer."""
    identity = {"identity_path": str(identity_path), "check_if_identity_free": False} if identity_path else {}
    peers = ", ".join(network.initial_peers)
    started = time.monotonic()
    waited = False
    while True:
        try:
            node = await DHTNode.create(
                initial_peers=list(network.initial_peers) or None,
                host_maddrs=list(network.host_maddrs),
                announce_maddrs=list(network.announce_maddrs) or None,
                client_mode=client_mode,
                **identity,
            )
        except P2PDaemonError as error:
            if NO_PEER_ANSWERED not in str(error):
                raise UserError(f"cannot join the swarm: {type(error).__name__}: {error}") from None
            if time.monotonic() + JOIN_RETRY_S > started + patience_s:
                raise UserError(
                    f"cannot join the swarm: none of the initial peers answered within {patience_s:.0f}s "
                    f"({peers}); pass a live peer with --initial-peers"
                ) from None
            if not waited:
                logger.warning(
                    "none of the initial peers answers (%s): retrying every %.0fs for up to %.0fs",
                    peers,
                    JOIN_RETRY_S,
                    patience_s,
                )
                waited = True
            await asyncio.sleep(JOIN_RETRY_S)
        except Exception as error:  # noqa: BLE001 - hivemind raises bare Exceptions for bad maddrs/peers
            raise UserError(f"cannot join the swarm: {type(error).__name__}: {error}") from None
        else:
            if waited:
                waited_s = time.monotonic() - started
                logger.info("joined the swarm after waiting %.0fs for an initial peer", waited_s)
            return node


async def shutdown_node(node: DHTNode) -> None:
    """Leave the DHT and stop the daemon. Ctrl+C in a terminal signals the daemon too (same process
    group), so it may already be gone: then there is nothing left to shut down."""
    try:
        await asyncio.wait_for(node.shutdown(), SHUTDOWN_TIMEOUT)
    except (OSError, P2PDaemonError, TimeoutError) as error:
        logger.debug("p2p daemon already gone at shutdown: %r", error)


async def visible_maddrs(node: DHTNode) -> list[str]:
    return [str(maddr) for maddr in await node.get_visible_maddrs()]


def stop_on_signals() -> asyncio.Event:
    """An Event set by SIGTERM or SIGINT: the process finishes its current call and shuts down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
