"""Calling a stage server over a P2P stream: one msgpack request out and one reply back (`call`),
or a completion's stream of requests and replies (`StageStream`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.wrappers_pb2 import BytesValue
from hivemind.p2p import P2P, PeerID
from hivemind.p2p.p2p_daemon_bindings.control import P2PDaemonError, P2PHandlerError
from hivemind.p2p.p2p_daemon_bindings.utils import ControlFailure

from offchain.swarm.shaping import LinkTable
from offchain.swarm.wire import (
    CONTROL_BYTES,
    FrameReader,
    WireError,
    framed_chunks,
    pack,
    read_framed,
    stream_chunks,
    unpack,
)

HANDLER_PREFIX = "StageServer.rpc_"


class RemoteError(RuntimeError):
    """The server understood the call and refused it (bad input, wrong round, ...)."""


class PeerUnreachable(RuntimeError):
    """The call did not complete: the peer is gone, its daemon refused, or it timed out."""


_P2P_FAILURES = (
    P2PHandlerError,
    P2PDaemonError,
    ControlFailure,
    ConnectionError,
    asyncio.IncompleteReadError,
    WireError,
)


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
    async with _reaching(f"{method} to {peer_id[-8:]}", timeout):
        if links is not None:
            await links.link(peer_id, "out").transmit(len(data))
        stream = await p2p.iterate_protobuf_handler(
            PeerID.from_base58(peer_id), HANDLER_PREFIX + method, stream_chunks(data), BytesValue
        )
        raw = await read_framed(stream, reply_limit)
        if links is not None and raw is not None:
            await links.link(peer_id, "in").transmit(len(raw))
    return _reply_document(
        raw,
        refused=f"{method} refused by {peer_id[-8:]}",
        closed=f"{method} to {peer_id[-8:]}: connection closed before the whole reply arrived",
    )


@contextlib.asynccontextmanager
async def _reaching(what: str, timeout: float) -> AsyncIterator[None]:
    """Runs the block within `timeout`; a timeout or a P2P failure becomes PeerUnreachable naming `what`."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise PeerUnreachable(f"{what} timed out after {timeout:.0f}s") from None
    except _P2P_FAILURES as error:
        raise PeerUnreachable(f"{what} failed: {error}") from None


def _reply_document(raw: bytes | None, *, refused: str, closed: str) -> dict[str, Any]:
    """A whole reply frame as a document; RemoteError if the server refused, PeerUnreachable if the
    stream closed before a whole frame arrived."""
    if raw is None:
        raise PeerUnreachable(closed)
    reply = unpack(raw)
    if "error" in reply:
        raise RemoteError(f"{refused}: {reply['error']}")
    return reply


class StageStream:
    """A completion's open `infer` stream to one stage server (offchain/swarm/sessions.py): each
    request goes out as one frame and is answered by one, in order; `close` ends the stream, which
    frees the completion's cache on the stage. The opening request is not waited for: its answer
    (`opening`) is read just before the first reply, so it costs no round trip of its own."""

    def __init__(self, peer_id: str, limit: int) -> None:
        self.peer_id, self.limit = peer_id, limit
        self.opening: dict[str, Any] | None = None
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._replies: FrameReader | None = None
        self._stream: AsyncIterator[BytesValue] | None = None

    async def _outgoing(self) -> AsyncIterator[BytesValue]:
        while (data := await self._outbox.get()) is not None:
            for chunk in framed_chunks(data):
                yield chunk

    async def open(self, p2p: P2P, request: dict[str, Any], *, timeout: float) -> None:
        """Open the stream and send its first request (PeerUnreachable if the stream cannot open)."""
        async with _reaching(f"infer to {self.peer_id[-8:]}", timeout):
            self._stream = await p2p.iterate_protobuf_handler(
                PeerID.from_base58(self.peer_id), HANDLER_PREFIX + "infer", self._outgoing(), BytesValue
            )
        self._replies = FrameReader(self._stream, self.limit)
        self._outbox.put_nowait(pack(request))

    async def request(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send one request on the stream and wait for its reply (RemoteError / PeerUnreachable as
        `call`; a refused opening raises here, at the first request)."""
        self._outbox.put_nowait(pack(request))
        await self.opened(timeout=timeout)
        return await self._reply(timeout)

    async def opened(self, *, timeout: float) -> dict[str, Any]:
        """The answer to the opening request: the round and digest the stage serves the session from
        (RemoteError if it refused the session, e.g. a caller that is not a gateway of the model)."""
        if self.opening is None:
            self.opening = await self._reply(timeout)
        return self.opening

    async def _reply(self, timeout: float) -> dict[str, Any]:
        async with _reaching(f"infer step to {self.peer_id[-8:]}", timeout):
            raw = await self._replies.read()
        return _reply_document(
            raw,
            refused=f"infer refused by {self.peer_id[-8:]}",
            closed=f"infer stream to {self.peer_id[-8:]} closed",
        )

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._stream is not None:
            with contextlib.suppress(*_P2P_FAILURES):  # a broken stream is closed all the same
                await self._stream.aclose()
