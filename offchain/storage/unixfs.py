"""UnixFS files as dag-pb DAGs, built exactly as `ipfs add` builds them with kubo's defaults.

Kubo's default profile (the one behind every `Qm...` CID it prints): fixed 256 KiB chunks; each
chunk becomes a dag-pb leaf holding a UnixFS `File` message (not a raw block); leaves are
grouped into parents of at most 174 links, level by level (the balanced layout), until one node
remains; a file of one chunk is that single leaf; CIDv0 (sha2-256, dag-pb). The protobuf
encodings are small enough to write by hand (dag-pb spec: Links (field 2) before Data
(field 1); PBLink = Hash 1, Name 2, Tsize 3; UnixFS Data = Type 1, Data 2, filesize 3,
blocksizes 4), and a leaf is kept as (head, chunk, tail) parts so each chunk is hashed and
written where it lies, never copied.

`build_file` streams chunks into blocks and hands each finished block to a callback, so a store
can write it at once and nothing but the link list stays in memory; `file_pieces` walks a
stored DAG back into the file's bytes, asking the caller for (verified) blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from offchain.storage.cids import DAG_PB, RAW, cid_text, cid_v0, codec_of, encode_varint, read_varint
from offchain.storage.errors import ContentTooLarge, StorageError

UNIXFS_RAW, UNIXFS_DIRECTORY, UNIXFS_FILE = 0, 1, 2
MIN_BYTES_PER_BLOCK = 1024
"""With a size limit, a DAG may use at most one block per this many bytes of the limit (plus the root):
kubo's layout needs one per 256 KiB, while a DAG of empty leaves would cost a fetch per block and
yield nothing, so without this bound a few distinct blocks could keep a reader busy for hours."""


@dataclass(frozen=True)
class Profile:
    """How bytes become a DAG. The defaults are kubo's `ipfs add` defaults (`--chunker=size-262144`)."""

    chunk_size: int = 262144
    max_links: int = 174

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.max_links < 2:
            raise ValueError(f"invalid profile {self}")


KUBO_DEFAULT = Profile()


@dataclass(frozen=True)
class Link:
    """A finished node as its parent sees it."""

    cid: bytes
    tsize: int  # bytes of this block plus every block under it (dag-pb `Tsize`)
    file_size: int  # file bytes under it (UnixFS `blocksizes` entry of the parent)


Bytes = bytes | bytearray | memoryview
BlockSink = Callable[[bytes, Sequence[Bytes]], None]  # (CID, the block as parts to concatenate)


def _field_bytes(tag: bytes, payload: Bytes) -> list[Bytes]:
    return [tag, encode_varint(len(payload)), payload]


def leaf_block(chunk: Bytes) -> tuple[bytes, Bytes, bytes]:
    """A dag-pb node whose Data is a UnixFS File holding `chunk` (kubo leaves with raw-leaves=false),
    as (head, chunk, tail): hashed and written in parts, so the chunk is never copied."""
    size = encode_varint(len(chunk))
    data_field = b"\x12" + size if len(chunk) else b""
    unixfs_len = 2 + len(data_field) + len(chunk) + 1 + len(size)
    return b"\x0a" + encode_varint(unixfs_len) + b"\x08\x02" + data_field, chunk, b"\x18" + size


def parent_block(children: list[Link]) -> bytes:
    """A dag-pb node linking `children` in order, with their file sizes in UnixFS blocksizes."""
    parts: list[Bytes] = []
    for child in children:
        link = b"".join([*_field_bytes(b"\x0a", child.cid), b"\x12\x00\x18", encode_varint(child.tsize)])
        parts += _field_bytes(b"\x12", link)
    total = sum(child.file_size for child in children)
    sizes = b"".join(b"\x20" + encode_varint(child.file_size) for child in children)
    parts += _field_bytes(b"\x0a", b"\x08\x02\x18" + encode_varint(total) + sizes)
    return b"".join(parts)


Blob = Bytes | Iterable[Bytes]  # one buffer, or pieces consumed once, in order (e.g. a ciphertext stream)


def as_bytes(data: Blob) -> Bytes:
    """A blob as one buffer (pieces are copied: a streaming producer may reuse its buffer)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return data
    return b"".join(bytes(piece) for piece in data)


def chunk_bytes(data: Blob, chunk_size: int) -> Iterator[memoryview]:
    """Fixed-size chunks of `data`; empty data is one empty chunk, as in kubo.

    Aligned full chunks are views into the input (no copy); the rest are assembled in one
    reused buffer, so each chunk is valid only until the next is requested (build_file copies
    each at once).
    """
    pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    buffer = bytearray(chunk_size)
    fill = 0
    emitted = False
    for piece in pieces:
        view = memoryview(piece).cast("B")
        pos = 0
        while pos < len(view):
            if fill == 0 and len(view) - pos >= chunk_size:
                yield view[pos : pos + chunk_size]
                pos += chunk_size
                emitted = True
                continue
            take = min(chunk_size - fill, len(view) - pos)
            buffer[fill : fill + take] = view[pos : pos + take]
            fill += take
            pos += take
            if fill == chunk_size:
                yield memoryview(buffer)
                fill = 0
                emitted = True
    if fill or not emitted:
        yield memoryview(buffer)[:fill]


def build_file(chunks: Iterable[Bytes], sink: BlockSink, profile: Profile = KUBO_DEFAULT) -> bytes:
    """Turn chunks into a balanced UnixFS DAG; `sink(cid, block)` gets every block; return the root CID."""
    level: list[Link] = []
    for chunk in chunks:
        parts = leaf_block(chunk)
        cid = cid_v0(*parts)
        sink(cid, parts)
        level.append(Link(cid, sum(len(part) for part in parts), len(chunk)))
    if not level:
        raise ValueError("build_file needs at least one chunk (an empty file is one empty chunk)")
    while len(level) > 1:
        parents = []
        for start in range(0, len(level), profile.max_links):
            group = level[start : start + profile.max_links]
            block = parent_block(group)
            cid = cid_v0(block)
            sink(cid, (block,))
            tsize = len(block) + sum(child.tsize for child in group)
            parents.append(Link(cid, tsize, sum(child.file_size for child in group)))
        level = parents
    return level[0].cid


def file_cid(data: Blob, profile: Profile = KUBO_DEFAULT) -> str:
    """The CID `ipfs add` prints for `data` (nothing is stored)."""
    root = build_file(chunk_bytes(data, profile.chunk_size), lambda _cid, _block: None, profile)
    return cid_text(root)


@dataclass
class PBNode:
    """A decoded dag-pb node: its UnixFS payload and its links (binary CIDs, in order)."""

    data: memoryview | None = None
    links: list[bytes] = field(default_factory=list)


@dataclass
class UnixFSData:
    """The fields of a UnixFS Data message this store reads."""

    type: int = -1
    data: memoryview | None = None
    filesize: int | None = None


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Protobuf fields as (field number, varint value or length-delimited bytes)."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
            yield number, value
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def decode_node(block: bytes | memoryview) -> PBNode:
    """Parse a dag-pb block (fields other than Data and Links are rejected, as the spec says)."""
    node = PBNode()
    for number, value in _fields(memoryview(block)):
        if number == 1 and isinstance(value, memoryview):
            node.data = value
        elif number == 2 and isinstance(value, memoryview):
            hashes = [bytes(v) for n, v in _fields(value) if n == 1 and isinstance(v, memoryview)]
            if len(hashes) != 1:
                raise ValueError("dag-pb link without exactly one Hash")
            node.links.append(hashes[0])
        else:
            raise ValueError(f"unexpected dag-pb field {number}")
    return node


def decode_unixfs(data: memoryview) -> UnixFSData:
    """Parse the UnixFS Data message of a dag-pb node."""
    parsed = UnixFSData()
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            parsed.type = value
        elif number == 2 and isinstance(value, memoryview):
            parsed.data = value
        elif number == 3 and isinstance(value, int):
            parsed.filesize = value
    return parsed


def file_pieces(
    root: bytes, get_block: Callable[[bytes], bytes], max_size: int | None = None
) -> Iterator[memoryview]:
    """The bytes of the UnixFS file at `root`, in order, as views into blocks from `get_block`.

    With `max_size`, ContentTooLarge is raised as soon as the file is known to be longer (the root's
    declared size, or the bytes yielded so far) or its DAG to need more blocks than such a file
    could (blocks fetched plus links still to follow): a DAG bomb costs at most that many fetches."""
    max_blocks = None if max_size is None else 1 + max_size // MIN_BYTES_PER_BLOCK
    size = fetched = 0
    stack = [root]
    while stack:
        cid = stack.pop()
        block = get_block(cid)
        fetched += 1
        codec = codec_of(cid)
        if codec == RAW:
            node, unixfs = PBNode(), UnixFSData(UNIXFS_RAW, memoryview(block))
        elif codec != DAG_PB:
            raise StorageError(f"{cid_text(cid)}: not a UnixFS file (codec 0x{codec:x})")
        else:
            try:
                node = decode_node(block)
                unixfs = decode_unixfs(node.data if node.data is not None else memoryview(b""))
            except ValueError as error:
                raise StorageError(f"{cid_text(cid)}: malformed dag-pb/UnixFS node ({error})") from None
            if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
                raise StorageError(f"{cid_text(cid)}: not a UnixFS file (UnixFS type {unixfs.type})")
        if max_size is not None:
            declared = unixfs.filesize if cid == root and unixfs.filesize is not None else 0
            size += len(unixfs.data) if unixfs.data is not None else 0
            if max(size, declared) > max_size:
                raise ContentTooLarge(
                    f"{cid_text(root)} is larger than the {max_size}-byte limit "
                    f"({max(size, declared)} bytes {'declared' if declared > size else 'so far'})"
                )
            if fetched + len(stack) + len(node.links) > max_blocks:
                raise ContentTooLarge(
                    f"{cid_text(root)}: its DAG needs more than {max_blocks} blocks, "
                    f"more than any file within the {max_size}-byte limit"
                )
        if unixfs.data is not None:
            yield unixfs.data
        stack.extend(reversed(node.links))


def dag_blocks(root: bytes, get_block: Callable[[bytes], bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Every distinct block under `root`, depth-first from the root (the order `ipfs dag export` uses)."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = get_block(cid)
        yield cid, block
        if codec_of(cid) == DAG_PB:
            try:
                links = decode_node(block).links
            except ValueError as error:
                raise StorageError(f"{cid_text(cid)}: malformed dag-pb node ({error})") from None
            stack.extend(reversed(links))
