"""The Kubo backend: a Kubo (go-ipfs) daemon driven over its RPC API with httpx.

Every Kubo RPC call is a POST to `<api>/api/v0/<command>` with arguments in the query string
(https://docs.ipfs.tech/reference/kubo/rpc/). ipfshttpclient is not used: its last release
refuses every kubo >= 0.9. Calls used here:

    add          chunker=size-262144 cid-version=0 raw-leaves=false pin=true  (multipart `file`)
    cat          the file's bytes (length= caps them)   block/get   one block      block/stat  offline=true
    pin/add      pin/rm     pin/ls type=recursive     dag/export (CAR out)     dag/import (CAR in)
    version

`add` is given kubo's default DAG settings explicitly, so the daemon's own Import config cannot
change the CID; the CID it returns is checked against the one computed here. `get` reads `cat`
and accepts it only if the bytes hash back to the CID under the same settings; otherwise (a DAG
built some other way, or a lying daemon) it walks the DAG with `block/get`, verifying each block.

Failures: connection refused and timeouts are retried with exponential backoff, then raise
KuboUnreachable; 401/403 (API.Authorizations), 404/405 (not the RPC port, or not POST) and
kubo's own error messages raise KuboError with the reason, except that a `cat` or `block/get`
kubo fails (the content not found within `fetch_timeout`, passed as kubo's own `timeout`
option, so a CID nobody provides fails instead of hanging) raises ContentUnavailable.
Credentials go in the URL (`http://user:password@host:5001`) and are sent as HTTP basic auth,
never printed.

A put that cannot reach the daemon is spooled (see spool.py) and pushed by the next call that
reaches it, or by `drain()`; the CID returned is the same either way.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from offchain.storage.car import read_car, write_car
from offchain.storage.cids import cid_text, parse_cid, verify_block
from offchain.storage.errors import (
    ContentTooLarge,
    ContentUnavailable,
    KuboCommandError,
    KuboError,
    KuboUnreachable,
    StorageError,
)
from offchain.storage.spool import Spool
from offchain.storage.unixfs import KUBO_DEFAULT, Blob, Bytes, Profile, as_bytes, file_cid, file_pieces

_RETRY_STATUS = {502, 503, 504}


class KuboStore:
    """A Kubo daemon as a `Store`, with a local spool for puts made while it is down."""

    def __init__(
        self,
        api_url: str,
        spool_dir: Path | str | None = None,
        *,
        timeout: float = 60.0,
        fetch_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        profile: Profile = KUBO_DEFAULT,
    ) -> None:
        try:
            url = httpx.URL(api_url if "://" in api_url else f"http://{api_url}")
        except httpx.InvalidURL as error:
            raise KuboError(f"{api_url!r} is not a valid Kubo RPC URL ({error})") from None
        auth = httpx.BasicAuth(url.username, url.password) if url.username else None
        self.api_url = str(url.copy_with(username=None, password=None)).rstrip("/")
        self.fetch_timeout = fetch_timeout
        self.retries = retries
        self.backoff = backoff
        self.profile = profile
        self.spool = Spool(Path(spool_dir)) if spool_dir is not None else None
        self._client = httpx.Client(base_url=f"{self.api_url}/api/v0/", auth=auth, timeout=timeout)

    def __repr__(self) -> str:
        return f"KuboStore({self.api_url!r})"

    def close(self) -> None:
        self._client.close()

    # -- the Store protocol -------------------------------------------------------------------

    def put(self, data: Blob, *, pin: bool = True) -> str:
        """Add `data` with kubo's default DAG settings; spool it if the daemon is unreachable."""
        data = as_bytes(data)
        cid = file_cid(data, self.profile)
        try:
            self.drain()
            self._add(data, pin, cid)
        except KuboUnreachable:
            if self.spool is None:
                raise
            self.spool.add(cid, data, pin)
        return cid

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """The file at `cid`, verified against the CID (from the spool if it has not been pushed yet).
        With `max_size`, `cat` is asked for one byte more than the limit (kubo stops reading the DAG
        there) and anything that is not a verified file within the limit is walked block by block
        under the same limit, so neither a DAG bomb nor a lying daemon makes this read past it."""
        root = parse_cid(cid)
        cid = cid_text(root)
        spooled = self.spool.find(cid) if self.spool else None
        if spooled is not None:
            if max_size is not None and spooled.path.stat().st_size > max_size:
                raise ContentTooLarge(f"{cid} is larger than the {max_size}-byte limit (spooled copy)")
            data = spooled.path.read_bytes()
            if file_cid(data, self.profile) != cid:
                raise StorageError(f"spooled copy of {cid} at {spooled.path} is corrupted")
            return data
        self._try_drain()
        params = {"arg": cid, **self._fetch_params()}
        if max_size is not None:
            params["length"] = str(max_size + 1)
        data = self._fetch("cat", params).content
        if (max_size is None or len(data) <= max_size) and file_cid(data, self.profile) == cid:
            return data
        return b"".join(file_pieces(root, self._block_get, max_size))

    def get_pieces(self, cid: str, *, max_size: int | None = None) -> Iterator[memoryview]:
        """The verified file as one piece (the RPC has no cheaper way to stream a verified file)."""
        yield memoryview(self.get(cid, max_size=max_size))

    def has(self, cid: str) -> bool:
        """Whether the daemon holds the root block of `cid` (`block/stat --offline`) or it is spooled."""
        cid = cid_text(parse_cid(cid))
        if self.spool and self.spool.find(cid):
            return True
        try:
            self._call("block/stat", {"arg": cid, "offline": "true"})
        except KuboCommandError:
            return False
        return True

    def pin(self, cid: str) -> None:
        self._try_drain()
        self._call("pin/add", {"arg": cid_text(parse_cid(cid)), "recursive": "true"})

    def unpin(self, cid: str) -> None:
        self._try_drain()
        self._call("pin/rm", {"arg": cid_text(parse_cid(cid)), "recursive": "true"})

    def pins(self) -> list[str]:
        self._try_drain()
        return sorted(self._call("pin/ls", {"type": "recursive"}).json().get("Keys", {}))

    def export_car(self, cid: str, out: BinaryIO) -> int:
        """`dag/export`, with every block verified against its CID before it is written to `out`."""
        self._try_drain()
        root = cid_text(parse_cid(cid))
        response = self._call("dag/export", {"arg": root})
        roots, sections = read_car(io.BytesIO(response.content))
        return write_car(out, roots, self._verified(sections))

    def import_car(self, src: BinaryIO) -> list[str]:
        """`dag/import` with pin-roots; a root kubo could not pin (incomplete DAG) is an error."""
        self._try_drain()
        car = src.read()
        response = self._call("dag/import", {"pin-roots": "true"}, files={"file": ("dag.car", car)})
        roots = []
        for record in _ndjson(response):
            root = record.get("Root")
            if root is None:
                continue
            if root.get("PinErrorMsg"):
                raise KuboError(
                    f"kubo imported the CAR but could not pin {root['Cid']['/']}: {root['PinErrorMsg']}"
                )
            roots.append(root["Cid"]["/"])
        return roots

    # -- Kubo-only ------------------------------------------------------------------------------

    def version(self) -> str:
        """The daemon's version string (also a cheap reachability check)."""
        return self._call("version", {}).json()["Version"]

    def drain(self) -> int:
        """Push every spooled put to the daemon; return how many went. KuboUnreachable if it is down."""
        pushed = 0
        for entry in self.spool.entries() if self.spool else []:
            try:
                data = entry.path.read_bytes()
            except FileNotFoundError:  # another process pushed it first
                continue
            self._add(data, entry.pin, entry.cid)
            entry.path.unlink(missing_ok=True)
            pushed += 1
        return pushed

    # -- internals ------------------------------------------------------------------------------

    def _try_drain(self) -> None:
        """Drain if the daemon is up; an unreachable daemon is reported by the call that follows."""
        if self.spool and self.spool.entries():
            try:
                self.drain()
            except KuboUnreachable:
                pass

    def _add(self, data: Bytes, pin: bool, expected: str) -> None:
        params = {
            "chunker": f"size-{self.profile.chunk_size}",
            "cid-version": "0",
            "raw-leaves": "false",
            "hash": "sha2-256",
            "pin": "true" if pin else "false",
            "progress": "false",
        }
        response = self._call(
            "add", params, files={"file": ("blob", bytes(data), "application/octet-stream")}
        )
        records = [record for record in _ndjson(response) if "Hash" in record]
        if not records:
            raise KuboError(f"kubo add at {self.api_url} returned no CID")
        if records[-1]["Hash"] != expected:
            raise KuboError(
                f"kubo at {self.api_url} stored the bytes as {records[-1]['Hash']}, expected {expected}: "
                "it does not honour the requested DAG settings"
            )

    def _verified(self, sections: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for cid, block in sections:
            verify_block(cid, block, f"in dag/export from {self.api_url}")
            yield cid, block

    def _fetch_params(self) -> dict[str, str]:
        """Kubo's per-command timeout: past it, a CID nobody provides fails instead of hanging."""
        return {"timeout": f"{self.fetch_timeout:g}s"}

    def _fetch(self, command: str, params: dict[str, str]) -> httpx.Response:
        """A read of content: kubo failing it (not found within the fetch timeout) is ContentUnavailable."""
        try:
            return self._call(command, params)
        except KuboCommandError as error:
            raise ContentUnavailable(str(error)) from None

    def _block_get(self, cid: bytes) -> bytes:
        block = self._fetch("block/get", {"arg": cid_text(cid), **self._fetch_params()}).content
        verify_block(cid, block, f"as served by kubo at {self.api_url}")
        return block

    def _call(
        self, command: str, params: dict[str, str], files: dict[str, Any] | None = None
    ) -> httpx.Response:
        """POST one RPC command; retry what may be transient; turn the rest into one clear error."""
        where = f"the Kubo RPC at {self.api_url}"
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(command, params=params, files=files)
            except httpx.ConnectError as error:
                failure = f"cannot connect ({_reason(error)}): is `ipfs daemon` running with its API here?"
                continue
            except httpx.TimeoutException:
                failure = f"no answer within {self._client.timeout.read}s"
                continue
            except httpx.TransportError as error:
                failure = f"connection failed ({_reason(error)})"
                continue
            if response.status_code in _RETRY_STATUS:
                failure = f"HTTP {response.status_code} from a proxy in front of it"
                continue
            _raise_for_status(response, where, command)
            return response
        raise KuboUnreachable(f"{where}: {failure} (after {self.retries + 1} attempts)")


def _raise_for_status(response: httpx.Response, where: str, command: str) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in (401, 403):
        raise KuboError(
            f"{where} refused `{command}` with HTTP {status}: it requires credentials (API.Authorizations); "
            "give them in the URL as http://USER:PASSWORD@HOST:PORT"
        )
    if status in (404, 405):
        raise KuboError(
            f"{where} answered `{command}` with HTTP {status}: is this the RPC API "
            "(default port 5001, POST only) and not a gateway?"
        )
    try:
        message = response.json().get("Message") or response.text
    except (json.JSONDecodeError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    raise KuboCommandError(f"{where}: `{command}` failed (HTTP {status}): {message}")


def _ndjson(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.text.splitlines():
        if line.strip():
            yield json.loads(line)


def _reason(error: Exception) -> str:
    text = str(error)
    return (
        "connection refused"
        if "refused" in text.lower() or "Errno 111" in text
        else text or type(error).__name__
    )
