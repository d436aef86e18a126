"""The embedded store: content-addressed blocks in a folder, no daemon.

Layout of the folder:

    blocks/<2 hex>/<sha2-256 hex>   one file per block, named by its digest (v0/v1 CIDs share it)
    pins/<cid>                      one empty file per recursively pinned root
    tmp/                            blocks being written (never read as blocks)
    quarantine/                     blocks that failed verification, moved aside for inspection
    lock                            flock: puts/imports share it, garbage collection takes it alone

Why a block can never be half-written and read as valid: it is written to tmp/, fsynced, then
renamed into blocks/ (rename is atomic), and every read hashes the block against its CID anyway:
a corrupted block raises BlockCorrupted naming the CID, is moved to quarantine/, and a later put
or CAR import of the same content writes it again. Temp files of a crashed put are removed by
`gc()`. The fsyncs make a put durable (it returns only once the blocks are on disk); they are
batched at the end of a put so the disk can write them together.

Past its first 8 blocks (2 MiB), a put hashes each block in the caller's thread while a writer
thread writes the previous one (both release the GIL): on these machines writing fresh pages
costs about as much as hashing them, so done one after the other a put could reach only half of
sha256's speed. One block is in flight at a time, so a producer that fills two buffers in turn
(`chunk_bytes`, `encrypt_checkpoint_stream`) never has a buffer overwritten while it is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from offchain.durable import fsync_path
from offchain.storage.car import read_car, write_car
from offchain.storage.cids import cid_text, digest_of, parse_cid, verify_block
from offchain.storage.errors import BlockCorrupted, BlockNotFound, StorageError
from offchain.storage.unixfs import (
    KUBO_DEFAULT,
    Blob,
    Bytes,
    Profile,
    build_file,
    chunk_bytes,
    dag_blocks,
    file_pieces,
)


@dataclass(frozen=True)
class GCResult:
    """What a garbage collection removed."""

    blocks_removed: int
    bytes_freed: int


class EmbeddedStore:
    """A folder of verified blocks with recursive pins. Implements `offchain.storage.Store`."""

    def __init__(self, folder: Path | str, *, fsync: bool = True, profile: Profile = KUBO_DEFAULT) -> None:
        self.folder = Path(folder)
        self._blocks, self._tmp = str(self.folder / "blocks"), str(self.folder / "tmp")  # str: hot path
        self._lockfile = str(self.folder / "lock")
        self.fsync = fsync
        self.profile = profile
        for sub in ("blocks", "pins", "tmp", "quarantine"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        if not (self.folder / "blocks" / "ff").exists():  # all 256 shards up front: no mkdir per put
            for shard in range(256):
                (self.folder / "blocks" / f"{shard:02x}").mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.folder)!r})"

    # -- the Store protocol -------------------------------------------------------------------

    def put(self, data: Blob, *, pin: bool = True) -> str:
        """Store `data` (bytes, or pieces streamed in order) as a UnixFS file and pin it; return its CID."""
        with self._lock(fcntl.LOCK_SH):  # held until pinned: a concurrent gc cannot take the new blocks
            with self._writer() as write:
                root = cid_text(build_file(chunk_bytes(data, self.profile.chunk_size), write, self.profile))
            if pin:
                self._write_pin(root)
        return root

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """The file at `cid`, every block verified against its CID on the way (at most `max_size` bytes)."""
        return b"".join(self.get_pieces(cid, max_size=max_size))

    def get_pieces(self, cid: str, *, max_size: int | None = None) -> Iterator[memoryview]:
        """The file at `cid` as consecutive pieces, each from a block verified before it is yielded."""
        return file_pieces(parse_cid(cid), self._read_block, max_size)

    def has(self, cid: str) -> bool:
        """Whether the root block of `cid` is here (like `ipfs block stat --offline`)."""
        return os.path.exists(self._block_file(parse_cid(cid)))

    def pin(self, cid: str) -> None:
        """Pin `cid` recursively; every block under it must be here and intact."""
        root = parse_cid(cid)
        with self._lock(fcntl.LOCK_SH):
            self._pin_complete(root)

    def unpin(self, cid: str) -> None:
        """Drop the pin on `cid`; its blocks go at the next `gc()` unless another pin holds them."""
        path = self._pin_file(cid_text(parse_cid(cid)))
        if not path.exists():
            raise StorageError(f"{cid} is not pinned in {self.folder}")
        path.unlink()

    def pins(self) -> list[str]:
        """The recursively pinned roots, sorted."""
        return sorted(path.name for path in (self.folder / "pins").iterdir())

    def export_car(self, cid: str, out: BinaryIO) -> int:
        """Write the DAG under `cid` as a CAR v1 to `out` (blocks verified); return bytes written."""
        root = parse_cid(cid)
        return write_car(out, [root], self._walk(root))

    def import_car(self, src: BinaryIO) -> list[str]:
        """Store every block of a CAR v1 (each verified against its CID), pin its roots, return them."""
        roots, sections = read_car(src)
        with self._lock(fcntl.LOCK_SH):
            with self._writer() as write:
                for cid, block in sections:
                    verify_block(cid, block, "in the CAR file")
                    write(cid, (block,))
            for root in roots:
                self._pin_complete(root)
        return [cid_text(root) for root in roots]

    # -- maintenance ----------------------------------------------------------------------------

    def gc(self) -> GCResult:
        """Delete every block no pin reaches, and the temp files of interrupted puts.

        A pinned DAG with a missing or corrupted block stops it before anything is deleted.
        """
        with self._lock(fcntl.LOCK_EX):
            live = {digest_of(cid).hex() for pin in self.pins() for cid, _ in self._walk(parse_cid(pin))}
            removed = freed = 0
            for path in self._block_files():
                if path.name not in live:
                    freed += path.stat().st_size
                    path.unlink()
                    removed += 1
            for path in (self.folder / "tmp").iterdir():
                path.unlink()
        return GCResult(removed, freed)

    def verify_all(self) -> list[str]:
        """Hash every stored block; return the hex digests of those that do not match their name."""
        return [p.name for p in self._block_files() if hashlib.sha256(p.read_bytes()).hexdigest() != p.name]

    # -- internals ------------------------------------------------------------------------------

    def _walk(self, root: bytes) -> Iterator[tuple[bytes, bytes]]:
        return dag_blocks(root, self._read_block)

    def _pin_complete(self, root: bytes) -> None:
        """Pin `root` after reading (and so verifying) every block under it."""
        for _ in self._walk(root):
            pass
        self._write_pin(cid_text(root))

    def _write_pin(self, cid: str) -> None:
        os.close(os.open(self._pin_file(cid), os.O_WRONLY | os.O_CREAT, 0o644))
        if self.fsync:
            fsync_path(self.folder / "pins")

    def _block_file(self, cid: bytes) -> str:
        digest = digest_of(cid).hex()
        return f"{self._blocks}/{digest[:2]}/{digest}"

    def _pin_file(self, cid: str) -> Path:
        return self.folder / "pins" / cid

    def _block_files(self) -> Iterable[Path]:
        return (path for shard in (self.folder / "blocks").iterdir() for path in shard.iterdir())

    def _read_block(self, cid: bytes) -> bytes:
        path = self._block_file(cid)
        try:
            with open(path, "rb") as handle:
                block = handle.read()
        except FileNotFoundError:
            raise BlockNotFound(cid_text(cid)) from None
        try:
            verify_block(cid, block, path)
        except BlockCorrupted:
            with contextlib.suppress(FileNotFoundError):  # another reader may have moved it first
                os.replace(path, self.folder / "quarantine" / os.path.basename(path))
            raise
        return block

    @contextlib.contextmanager
    def _lock(self, mode: int) -> Iterator[None]:
        fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _writer(self) -> Iterator[BlockWriter]:
        """Collect new blocks in tmp/, then make them durable and visible together."""
        writer = BlockWriter(self)
        try:
            yield writer
            writer.commit()
        finally:
            writer.discard()


_INLINE_BLOCKS = 8
"""A put's first blocks are written by the caller (for a small put a thread costs more than it
saves); the writer thread takes over from the next one."""


class BlockWriter:
    """One put's new blocks: written to tmp/ as they come (past the first few by a writer thread,
    one at a time, while the caller hashes the next), renamed into blocks/ on commit."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.pending: dict[str, str] = {}  # final path -> temp file
        self.tag = os.urandom(8).hex()  # names this put's temp files (uuid4 costs 5x more, per put)
        self._thread: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def __call__(self, cid: bytes, parts: Sequence[Bytes]) -> None:
        self._wait()  # the previous block is written: its producer may refill that buffer now
        final = self.store._block_file(cid)
        if final in self.pending or os.path.exists(final):
            return
        temp = f"{self.store._tmp}/{os.path.basename(final)}.{self.tag}"
        self.pending[final] = temp
        if len(self.pending) <= _INLINE_BLOCKS:
            _write_block(temp, parts)
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pm-store-writer")
        self._writing = self._thread.submit(_write_block, temp, parts)

    def _wait(self) -> None:
        """Block until the write in flight is done; re-raise what it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def commit(self) -> None:
        self._wait()
        shards = set()
        for final, temp in self.pending.items():
            if self.store.fsync:
                fsync_path(temp)
            os.replace(temp, final)
            shards.add(os.path.dirname(final))
        if self.store.fsync:
            for directory in shards:
                fsync_path(directory)
        self.pending.clear()

    def discard(self) -> None:
        with contextlib.suppress(OSError, StorageError):  # the put already failed; clean up after it
            self._wait()
        if self._thread is not None:
            self._thread.shutdown()
        for temp in self.pending.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _write_block(temp: str, parts: Sequence[Bytes]) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if os.writev(fd, parts) != sum(len(part) for part in parts):
            raise StorageError(f"short write to {temp} (disk full?)")
    finally:
        os.close(fd)
