"""A TCP proxy between the demo's daemons and anvil, which `pm demo --faults` cuts for a while: the
chain's RPC endpoint unreachable for every daemon at once, as when a home connection drops.

It runs its own asyncio loop in a thread of `pm demo`. While cut, every open connection is reset
and every new one is closed as soon as it is accepted (what a client sees from a dead endpoint
behind a load balancer); once restored, connections are piped to anvil again, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

CHUNK = 64 * 1024


class RpcProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.cut_until = 0.0  # loop time until which the endpoint is unreachable
        self._transports: set[asyncio.Transport] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RpcProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self, seconds: float) -> None:
        """Make the endpoint unreachable for `seconds` from now: open connections are reset."""

        def now_cut() -> None:
            self.cut_until = self.loop.time() + seconds
            for transport in list(self._transports):
                transport.abort()

        self.loop.call_soon_threadsafe(now_cut)

    def _down(self) -> bool:
        return self.loop.time() < self.cut_until

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down():
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer.transport, upstream_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        finally:
            self._transports.difference_update(pair)
            for transport in pair:
                transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()

    def close(self) -> None:
        """Stop serving and end the loop's thread (never raises)."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for transport in list(self._transports):
                transport.abort()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
