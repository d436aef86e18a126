"""The `Store` protocol every backend implements, and `open_store` which picks one.

Two backends, same CIDs for the same bytes (kubo's `ipfs add` defaults):
- `EmbeddedStore(folder)`: blocks in a folder, no daemon (the default);
- `KuboStore(api_url, spool_dir)`: a Kubo daemon over its RPC; puts made while it is down are
  spooled in `spool_dir` and pushed when it is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from offchain.storage.unixfs import Blob


@runtime_checkable
class Store(Protocol):
    """Content-addressed file storage: what workers, verifiers and the CLI call."""

    def put(self, data: Blob, *, pin: bool = True) -> str:
        """Store bytes, or pieces streamed in order (e.g. `encrypt_checkpoint_stream(...)`), as a
        UnixFS file; return its CID (what `ipfs add` prints for the same bytes)."""
        ...

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """The bytes of the file at `cid`, verified against the CID block by block. `max_size`:
        ContentTooLarge as soon as the file (or the expansion of its DAG) is known to exceed it,
        before more is fetched: what every reader of untrusted CIDs passes."""
        ...

    def get_pieces(self, cid: str, *, max_size: int | None = None) -> Iterator[memoryview]:
        """The same bytes as consecutive pieces, each verified before it is yielded (for
        `decrypt_checkpoint_stream`, which decrypts from them without joining them first)."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the root block of `cid` is held locally (no network lookup)."""
        ...

    def pin(self, cid: str) -> None:
        """Keep `cid` and everything under it (recursive pin)."""
        ...

    def unpin(self, cid: str) -> None:
        """Release a recursive pin."""
        ...

    def pins(self) -> list[str]:
        """Recursively pinned roots, sorted."""
        ...

    def export_car(self, cid: str, out: BinaryIO) -> int:
        """Write the DAG under `cid` as CAR v1; return the bytes written."""
        ...

    def import_car(self, src: BinaryIO) -> list[str]:
        """Import a CAR v1 (blocks verified), pin its roots, return them."""
        ...


def open_store(ipfs_api: str | None, folder: Path | str) -> Store:
    """The Kubo backend when `ipfs_api` is a URL (spooling under `folder`/spool), else the embedded store."""
    if ipfs_api:
        from offchain.storage.kubo import KuboStore

        return KuboStore(ipfs_api, spool_dir=Path(folder) / "spool")
    from offchain.storage.embedded import EmbeddedStore

    return EmbeddedStore(folder)
