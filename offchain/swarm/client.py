"""Calling a stage server: one msgpack request out, one msgpack reply back, over a P2P stream."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.wrappers_pb2 import BytesValue
from hivemind.p2p import P2P, PeerID
from hivemind.p2p.p2p_daemon_bindings.control import P2PDaemonError, P2PHandlerError
from hivemind.p2p.p2p_daemon_bindings.utils import ControlFailure

from offchain.swarm.shaping import LinkTable
from offchain.swarm.wire import CONTROL_BYTES, WireError, pack, read_framed, stream_chunks, unpack

HANDLER_PREFIX = "StageServer.rpc_"


class RemoteError(RuntimeError):
    """The server understood the call and refused it (bad input, wrong round, ...)."""


class PeerUnreachable(RuntimeError):
    """The call did not complete: the peer is gone, its daemon refused, or it timed out."""


async def call(
    p2p: P2P,
    peer_id: str,
    method: str,
    request: dict[str, Any],
    *,
    timeout: float,
    links: LinkTable | None = None,
    reply_limit: int = CONTROL_BYTES,
) -> dict[str, Any]:
    """Send `request` to `peer_id`'s `rpc_<method>` and return its reply document.

    Raises RemoteError when the server replied with an error, PeerUnreachable otherwise (also for
    a reply larger than `reply_limit` bytes: nothing past the limit is read)."""
    data = pack(request)
    try:
        async with asyncio.timeout(timeout):
            if links is not None:
                await links.link(peer_id, "out").transmit(len(data))
            stream = await p2p.iterate_protobuf_handler(
                PeerID.from_base58(peer_id), HANDLER_PREFIX + method, stream_chunks(data), BytesValue
            )
            raw = await read_framed(stream, reply_limit)
            if links is not None:
                await links.link(peer_id, "in").transmit(len(raw))
    except TimeoutError:
        raise PeerUnreachable(f"{method} to {peer_id[-8:]} timed out after {timeout:.0f}s") from None
    except (
        P2PHandlerError,
        P2PDaemonError,
        ControlFailure,
        ConnectionError,
        asyncio.IncompleteReadError,
        WireError,
    ) as error:
        raise PeerUnreachable(f"{method} to {peer_id[-8:]} failed: {error}") from None
    if raw is None:
        raise PeerUnreachable(f"{method} to {peer_id[-8:]}: connection closed before the whole reply arrived")
    reply = unpack(raw)
    if "error" in reply:
        raise RemoteError(f"{method} refused by {peer_id[-8:]}: {reply['error']}")
    return reply
