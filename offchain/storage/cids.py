"""CIDs as bytes, and the varints they are built from.

Inside the store a CID is its binary form (what dag-pb links and CAR sections carry): a CIDv0 is
the bare sha2-256 multihash `0x12 0x20 <digest>`, a CIDv1 is `0x01 <codec varint> <multihash>`.
Text forms (`Qm...` base58btc for v0, `b...` base32 for v1, as kubo prints them) are parsed and
printed with py-cid, the multiformats implementation hivemind already depends on (maintained,
released 2026, handles multibase and multihash validation; no extra dependency). Its binary
reader mis-handles bare CIDv0 multihashes, so the binary layout, which the CID spec fixes in a
few lines, is handled here.

Only sha2-256 multihashes are accepted: that is what kubo's defaults produce, and a store that
verifies every block must know how to hash it.
"""

from __future__ import annotations

import hashlib

import cid as pycid

from offchain.storage.errors import BlockCorrupted, InvalidCID

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
_MH_PREFIX = bytes([SHA2_256, 32])


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as protobuf, multiformats and CAR use it."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint at `pos`; return (value, position after it)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def cid_v0(*parts: bytes | bytearray | memoryview) -> bytes:
    """The CIDv0 (dag-pb, sha2-256) of the block made of `parts`, in binary form."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return _MH_PREFIX + digest.digest()


def split_cid(buf: bytes | memoryview, pos: int = 0) -> int:
    """Return where the binary CID starting at `pos` ends (CAR sections do not length-prefix it)."""
    try:
        if buf[pos] == SHA2_256:
            end = pos + 2 + buf[pos + 1]
        else:
            version, at = read_varint(buf, pos)
            if version != 1:
                raise InvalidCID(f"unsupported CID version {version}")
            _codec, at = read_varint(buf, at)
            _hash_code, at = read_varint(buf, at)
            length, at = read_varint(buf, at)
            end = at + length
    except (IndexError, ValueError) as error:
        raise InvalidCID(f"truncated CID: {error}") from None
    if end > len(buf):
        raise InvalidCID("truncated CID")
    return end


def codec_of(cid: bytes) -> int:
    """The multicodec of a binary CID (CIDv0 is always dag-pb)."""
    if cid[:2] == _MH_PREFIX:
        return DAG_PB
    return read_varint(cid, 1)[0]


def digest_of(cid: bytes) -> bytes:
    """The sha2-256 digest inside a binary CID; other hash functions are refused."""
    if cid[0] == SHA2_256:
        multihash = cid
    else:
        _codec, after_codec = read_varint(cid, 1)
        multihash = cid[after_codec:]
    if multihash[:2] != _MH_PREFIX or len(multihash) != 34:
        raise InvalidCID(f"{cid_text(cid)}: only sha2-256 CIDs are supported")
    return bytes(multihash[2:])


def verify_block(cid: bytes, block: bytes | memoryview, where: str) -> None:
    """Raise BlockCorrupted (naming the CID) unless `block` hashes to `cid`."""
    if hashlib.sha256(block).digest() != digest_of(cid):
        raise BlockCorrupted(cid_text(cid), where)


def cid_text(cid: bytes) -> str:
    """Print a binary CID the way kubo does: base58btc for v0, base32 for v1."""
    if cid[:2] == _MH_PREFIX:
        return pycid.make_cid(0, "dag-pb", bytes(cid)).encode().decode()
    return pycid.from_bytes(bytes(cid)).encode("base32").decode()


def parse_cid(text: str) -> bytes:
    """Parse a CID string (or /ipfs/<cid> path) into binary form; InvalidCID if it is not one."""
    text = text.strip()
    try:
        parsed = pycid.from_string(text)
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidCID(f"not a CID: {text!r} ({error})") from None
    binary = bytes(parsed.multihash) if parsed.version == 0 else bytes(parsed.buffer)
    if codec_of(binary) not in (DAG_PB, RAW):
        raise InvalidCID(f"{text}: only dag-pb and raw CIDs are supported")
    digest_of(binary)
    return binary


def cid_to_bytes32(cid: str) -> bytes:
    """The 32 bytes a CID is kept as on-chain: the sha2-256 digest inside a CIDv0.

    A CIDv0 is base58btc of 0x12 0x20 + digest, so the digest alone names it losslessly. Only
    dag-pb sha2-256 CIDs (v0, or the same content as a v1) map to one; a raw-leaves CIDv1 names
    different bytes than the CIDv0 of the same digest would, so it is refused."""
    binary = parse_cid(cid)
    if codec_of(binary) != DAG_PB:
        raise InvalidCID(f"{cid.strip()}: only dag-pb CIDs (CIDv0) fit in a bytes32")
    return digest_of(binary)


def bytes32_to_cid(raw: bytes) -> str:
    """The CIDv0 text of an on-chain bytes32 digest. The zero digest means "no CID" on-chain
    (e.g. the parent of a stage's first claim), so it is refused rather than named: check for it first."""
    raw = bytes(raw)
    if len(raw) != 32:
        raise InvalidCID(f"a CIDv0 digest is 32 bytes, not {len(raw)}")
    if raw == bytes(32):
        raise InvalidCID("the zero digest names no CID")
    return cid_text(_MH_PREFIX + raw)
