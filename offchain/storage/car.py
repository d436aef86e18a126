"""CAR v1 (Content Addressable aRchive): how a DAG moves between this store and any IPFS node.

Layout (https://ipld.io/specs/transport/car/carv1/): `varint(len) header` then, per block,
`varint(len(cid) + len(block)) cid block`. The header is DAG-CBOR `{"roots": [CID...],
"version": 1}`, CIDs as CBOR tag 42 over `0x00 + binary CID`. cbor2 (a maintained CBOR library
brownie already installs) encodes it with canonical key order, which is DAG-CBOR's order
(shorter keys first), and decodes headers written by kubo's `ipfs dag export`.

Blocks are yielded as read: the importer verifies each against its CID before storing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

import cbor2

from offchain.storage.cids import encode_varint, split_cid
from offchain.storage.errors import InvalidCID, StorageError

_CID_TAG = 42
_MAX_SECTION = 16 << 20  # kubo refuses blocks over 4 MiB; anything this large is a broken file


class CarError(StorageError):
    """A file that is not a well-formed CAR v1."""


def encode_header(roots: list[bytes]) -> bytes:
    """The DAG-CBOR header of a CAR v1 with these root CIDs (binary)."""
    return cbor2.dumps(
        {"roots": [cbor2.CBORTag(_CID_TAG, b"\x00" + r) for r in roots], "version": 1}, canonical=True
    )


def write_car(out: BinaryIO, roots: list[bytes], blocks: Iterable[tuple[bytes, bytes]]) -> int:
    """Write a CAR v1 to `out`; return the number of bytes written."""
    header = encode_header(roots)
    written = out.write(encode_varint(len(header)) + header)
    for cid, block in blocks:
        written += out.write(encode_varint(len(cid) + len(block)) + cid)
        written += out.write(block)
    return written


def _read_varint(src: BinaryIO) -> int | None:
    """A varint from a stream; None at a clean end of stream."""
    value = shift = 0
    while True:
        byte = src.read(1)
        if not byte:
            if shift:
                raise CarError("CAR file truncated inside a length prefix")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise CarError("CAR length prefix longer than 64 bits")


def _read_exact(src: BinaryIO, size: int, what: str) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise CarError(f"CAR file truncated in {what} ({len(data)} of {size} bytes)")
    return data


def decode_header(raw: bytes) -> list[bytes]:
    """The root CIDs (binary) of a CAR v1 header; CarError for anything else (CAR v2 included)."""
    try:
        header = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError) as error:
        raise CarError(f"CAR header is not valid CBOR ({error})") from None
    if not isinstance(header, dict) or header.get("version") != 1:
        version = header.get("version") if isinstance(header, dict) else None
        raise CarError(f"unsupported CAR version {version!r}: only CAR v1 (`ipfs dag export`) is supported")
    roots = header.get("roots")
    if not isinstance(roots, list):
        raise CarError("CAR header has no roots list")
    cids = []
    for root in roots:
        if not (isinstance(root, cbor2.CBORTag) and root.tag == _CID_TAG and root.value[:1] == b"\x00"):
            raise CarError(f"CAR root is not a CID: {root!r}")
        cids.append(bytes(root.value[1:]))
    return cids


def read_car(src: BinaryIO) -> tuple[list[bytes], Iterator[tuple[bytes, bytes]]]:
    """Read a CAR v1 header now; return its roots and an iterator over (cid, block) sections."""
    header_len = _read_varint(src)
    if not header_len or header_len > _MAX_SECTION:
        raise CarError("not a CAR file: empty or implausible header length")
    roots = decode_header(_read_exact(src, header_len, "the header"))

    def sections() -> Iterator[tuple[bytes, bytes]]:
        while (size := _read_varint(src)) is not None:
            if size > _MAX_SECTION:
                raise CarError(f"CAR section of {size} bytes is larger than any block")
            section = _read_exact(src, size, "a block section")
            try:
                end = split_cid(section)
            except InvalidCID as error:
                raise CarError(f"CAR section with a bad CID ({error})") from None
            yield section[:end], section[end:]

    return roots, sections()
