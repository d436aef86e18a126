"""An HTTP server speaking the Kubo RPC request/response shapes the Kubo backend uses.

No kubo binary can be downloaded on these machines, so the backend is tested against this
server: aiohttp on a free loopback port, POST only (405 otherwise, as kubo), optional basic
auth (403 when wrong, as API.Authorizations), kubo's JSON/NDJSON bodies and 500 + `Message`
errors; `reject_status` and `delay` play a gateway, a failing proxy or a hung daemon.
Blocks live in a real EmbeddedStore, so the CIDs it returns are real. `add` refuses
any DAG settings other than kubo's defaults, so the client is proven to send them. `corrupt`
makes it serve flipped bytes from cat/block/get, to prove the client verifies what it receives.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
from pathlib import Path

from aiohttp import web

from offchain.storage.cids import cid_text, parse_cid
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import StorageError

KUBO_ADD_DEFAULTS = {"chunker": "size-262144", "cid-version": "0", "raw-leaves": "false", "hash": "sha2-256"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeKubo:
    def __init__(self, folder: Path, credentials: tuple[str, str] | None = None) -> None:
        self.store = EmbeddedStore(folder)
        self.port = free_port()
        self.credentials = credentials
        self.corrupt = False
        self.reject_status: int | None = None  # answer every request with this status (a gateway, a proxy)
        self.delay = 0.0  # seconds before answering (timeouts)
        self.cat_bytes_served = 0  # of the last `cat` with a length
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKubo:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application(middlewares=[self._kubo_rules], client_max_size=1 << 30)
            app.router.add_route("*", "/api/v0/{command:.+}", self._dispatch)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake kubo did not start"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    @web.middleware
    async def _kubo_rules(self, request: web.Request, handler):
        self.requests.append((request.method, request.match_info.get("command", ""), dict(request.query)))
        await asyncio.sleep(self.delay)
        if self.reject_status:
            return web.Response(status=self.reject_status, text=f"{self.reject_status} - rejected")
        if request.method != "POST":
            return web.Response(status=405, text="405 - Method Not Allowed")
        expected = "Basic " + base64.b64encode(":".join(self.credentials or ()).encode()).decode()
        if self.credentials and request.headers.get("Authorization") != expected:
            return web.Response(status=403, text="403 - Forbidden")
        try:
            return await handler(request)
        except StorageError as error:
            return web.json_response({"Message": str(error), "Code": 0, "Type": "error"}, status=500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        command = request.match_info["command"]
        query = request.query
        store = self.store
        if command == "version":
            return web.json_response(
                {"Version": "0.32.1", "Commit": "fake", "Repo": "16", "System": "amd64/linux"}
            )
        if command == "add":
            wrong = {k: query.get(k) for k, v in KUBO_ADD_DEFAULTS.items() if query.get(k) != v}
            if wrong:
                return web.json_response(
                    {"Message": f"unexpected add settings {wrong}", "Code": 1}, status=400
                )
            data = await self._upload(request)
            cid = store.put(data, pin=query.get("pin", "true") == "true")
            return web.Response(text=json.dumps({"Name": "blob", "Hash": cid, "Size": str(len(data))}) + "\n")
        if command == "cat":
            return web.Response(body=self._maybe_corrupt(self._cat(query["arg"], query.get("length"))))
        if command == "block/get":
            return web.Response(body=self._maybe_corrupt(store._read_block(parse_cid(query["arg"]))))
        if command == "block/stat":
            if not store.has(query["arg"]):
                raise StorageError(
                    f"block was not found locally (offline): ipld: could not find {query['arg']}"
                )
            return web.json_response({"Key": query["arg"], "Size": 0})
        if command == "pin/add":
            store.pin(query["arg"])
            return web.json_response({"Pins": [query["arg"]]})
        if command == "pin/rm":
            if query["arg"] not in store.pins():
                raise StorageError("not pinned or pinned indirectly")
            store.unpin(query["arg"])
            return web.json_response({"Pins": [query["arg"]]})
        if command == "pin/ls":
            return web.json_response({"Keys": {cid: {"Type": "recursive"} for cid in store.pins()}})
        if command == "dag/export":
            out = io.BytesIO()
            store.export_car(query["arg"], out)
            return web.Response(body=out.getvalue(), content_type="application/vnd.ipld.car")
        if command == "dag/import":
            roots = store.import_car(io.BytesIO(await self._upload(request)))
            lines = [
                json.dumps({"Root": {"Cid": {"/": cid_text(parse_cid(r))}, "PinErrorMsg": ""}}) for r in roots
            ]
            return web.Response(text="\n".join(lines) + "\n")
        return web.Response(status=404, text="404 page not found")

    def _cat(self, cid: str, length: str | None) -> bytes:
        """The file's bytes, or its first `length` bytes (kubo reads no further into the DAG)."""
        if length is None:
            return self.store.get(cid)
        out = bytearray()
        for piece in self.store.get_pieces(cid):
            out += piece[: int(length) - len(out)]
            if len(out) >= int(length):
                break
        self.cat_bytes_served = len(out)
        return bytes(out)

    async def _upload(self, request: web.Request) -> bytes:
        reader = await request.multipart()
        part = await reader.next()
        return await part.read()

    def _maybe_corrupt(self, data: bytes) -> bytes:
        if not self.corrupt or not data:
            return data
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        return bytes(flipped)
