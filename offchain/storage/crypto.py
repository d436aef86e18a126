"""Encryption at rest for stage checkpoints, and sealed key handover between members.

Each (model, stage) has one symmetric `StageKey` (32 random bytes). The first member of a stage
creates it; a member hands it to a newcomer or a validator, after checking on-chain that they
joined that stage or are validators, as a sealed box to the X25519 public key they registered
(`WorkLedger.join(..., bytes32 encryptionKey)`). Checkpoints on IPFS are ciphertext: the CID is
of the ciphertext, the on-chain `checkpointDigest` is of the plaintext canonical state.

Checkpoint ciphertext (AES-256-GCM, the whole header is the associated data, so any change to
it fails authentication):

    offset  size  field
    0       4     magic "PMCK"
    4       1     version = 1
    5       8     key id = SHA-256("pm/stage-key-id/v1" | model id (32 B, big-endian) | stage | secret)[:8]
    13      12    nonce (random)
    25      n+16  AES-256-GCM(secret, nonce, plaintext, aad = bytes 0..25): ciphertext then tag

The key id names the key without revealing it, so "wrong key" is told apart from "altered".
Random 96-bit nonces are safe for far more checkpoints than a stage will ever write (2^32).

Sealed stage key (X25519 + HKDF-SHA256 + AES-256-GCM, an ECIES sealed box like libsodium's):

    0   4   magic "PMSB"      4   1   version = 1      5   32   ephemeral X25519 public key
    37  81  AES-256-GCM(k, n, model id (32 B) | stage (1 B) | secret (32 B), aad = bytes 0..37)

where k | n = HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral pub | recipient pub,
info = "pm/sealed-stage-key/v1", 44 bytes). Only the holder of the recipient's private key can
derive k; each box uses a fresh ephemeral key, so the derived nonce is never reused.

API: `StageKey.generate(model_id, stage)`, `encrypt_checkpoint(key, plaintext)`,
`decrypt_checkpoint(key, blob)`, `generate_encryption_keypair()`, `public_key_of(private)`,
`seal_key(recipient_public, key)`, `open_sealed_key(recipient_private, sealed)`; and the
streaming pair for large checkpoints, same bytes on disk:
`store.put(encrypt_checkpoint_stream(key, plaintext))` and
`decrypt_checkpoint_stream(key, store.get_pieces(cid))`, which never copy the ciphertext into a
buffer of its own (on these machines touching fresh memory costs about as much as hashing it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from offchain.storage.errors import DecryptionError
from offchain.storage.unixfs import Bytes

CHECKPOINT_MAGIC = b"PMCK"
SEALED_MAGIC = b"PMSB"
VERSION = 1
_KEY_ID_LEN, _NONCE_LEN, _TAG_LEN = 8, 12, 16
HEADER_LEN = len(CHECKPOINT_MAGIC) + 1 + _KEY_ID_LEN + _NONCE_LEN
_SEALED_HEAD_LEN = len(SEALED_MAGIC) + 1 + 32
_KEY_PAYLOAD_LEN = 32 + 1 + 32


@dataclass(frozen=True)
class StageKey:
    """The symmetric key of one (model, stage). `repr` never shows the secret."""

    model_id: int
    stage: int
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("a stage key secret is 32 bytes")
        if not (0 <= self.stage < 256 and 0 <= self.model_id < 2**256):
            raise ValueError(f"model id {self.model_id} / stage {self.stage} out of range")

    @classmethod
    def generate(cls, model_id: int, stage: int) -> StageKey:
        """A fresh random key: the first member of a stage calls this once."""
        return cls(model_id, stage, AESGCM.generate_key(bit_length=256))

    @property
    def key_id(self) -> bytes:
        """8 bytes naming this key in ciphertext headers (a hash: the secret cannot be derived from it)."""
        return hashlib.sha256(b"pm/stage-key-id/v1" + self._payload()).digest()[:_KEY_ID_LEN]

    def _payload(self) -> bytes:
        return self.model_id.to_bytes(32, "big") + bytes([self.stage]) + self.secret

    def __repr__(self) -> str:
        return f"StageKey(model_id={self.model_id}, stage={self.stage}, key_id={self.key_id.hex()})"


def _new_header(key: StageKey) -> bytes:
    return CHECKPOINT_MAGIC + bytes([VERSION]) + key.key_id + os.urandom(_NONCE_LEN)


def key_id_of(head: Bytes) -> bytes:
    """The id of the stage key a checkpoint ciphertext was encrypted under, from its header (the
    ciphertext's first HEADER_LEN bytes): a stage's content may be under several keys (rotation)."""
    header = bytes(memoryview(head)[:HEADER_LEN])
    if len(header) < HEADER_LEN:
        raise _truncated(len(header))
    if header[:4] != CHECKPOINT_MAGIC:
        raise DecryptionError(
            "not a checkpoint ciphertext (bad magic): was it encrypted with encrypt_checkpoint?"
        )
    if header[4] != VERSION:
        raise DecryptionError(
            f"unsupported checkpoint ciphertext version {header[4]} (this code reads {VERSION})"
        )
    return header[5 : 5 + _KEY_ID_LEN]


def _check_header(key: StageKey, header: bytes) -> bytes:
    """Validate a checkpoint header for `key`; return its nonce."""
    key_id = key_id_of(header)
    if key_id != key.key_id:
        raise DecryptionError(
            f"wrong key: the checkpoint was encrypted under key id {key_id.hex()}, "
            f"the key given (model {key.model_id} stage {key.stage}) has key id {key.key_id.hex()}"
        )
    return header[-_NONCE_LEN:]


def _truncated(size: int) -> DecryptionError:
    return DecryptionError(f"checkpoint ciphertext truncated: {size} bytes, less than header and tag")


def _altered() -> DecryptionError:
    return DecryptionError("checkpoint ciphertext failed authentication: it was altered or truncated")


def encrypt_checkpoint(key: StageKey, plaintext: Bytes) -> bytearray:
    """Encrypt a checkpoint under its stage key: header (magic, version, key id, nonce) then AES-GCM."""
    header = _new_header(key)
    blob = bytearray(HEADER_LEN + len(plaintext) + _TAG_LEN)
    blob[:HEADER_LEN] = header
    AESGCM(key.secret).encrypt_into(header[-_NONCE_LEN:], plaintext, header, memoryview(blob)[HEADER_LEN:])
    return blob


def encrypt_checkpoint_stream(
    key: StageKey, plaintext: Bytes, piece_size: int = 262144
) -> Iterator[memoryview]:
    """The bytes `encrypt_checkpoint` would return, as `piece_size` pieces (the last may be shorter).

    AES-GCM runs as a stream into one reused buffer, so no ciphertext-sized buffer is ever
    allocated; with the store's chunk size as `piece_size`, `store.put` takes each piece as a
    chunk without copying. A piece is valid only until the next is requested.
    """
    header = _new_header(key)
    encryptor = Cipher(algorithms.AES(key.secret), modes.GCM(header[-_NONCE_LEN:])).encryptor()
    encryptor.authenticate_additional_data(header)
    buffer = bytearray(piece_size + 15)  # update_into wants len(data) + block size - 1 of room
    view = memoryview(buffer)
    fill = 0
    source = memoryview(plaintext).cast("B")

    def copy_in(data: bytes) -> Iterator[memoryview]:
        nonlocal fill
        while data:
            take = min(piece_size - fill, len(data))
            buffer[fill : fill + take] = data[:take]
            fill, data = fill + take, data[take:]
            if fill == piece_size:
                yield view[:piece_size]
                fill = 0

    yield from copy_in(header)
    pos = 0
    while pos < len(source):
        take = min(piece_size - fill, len(source) - pos)
        encryptor.update_into(source[pos : pos + take], view[fill:])
        fill, pos = fill + take, pos + take
        if fill == piece_size:
            yield view[:piece_size]
            fill = 0
    encryptor.finalize()
    yield from copy_in(encryptor.tag)
    if fill:
        yield view[:fill]


def decrypt_checkpoint(key: StageKey, blob: Bytes) -> bytes:
    """The plaintext of `blob`; DecryptionError if it is not ours, truncated, altered or under another key."""
    view = memoryview(blob)
    if len(view) < HEADER_LEN + _TAG_LEN:
        raise _truncated(len(view))
    header = bytes(view[:HEADER_LEN])
    nonce = _check_header(key, header)
    try:
        return AESGCM(key.secret).decrypt(nonce, view[HEADER_LEN:], header)
    except InvalidTag:
        raise _altered() from None


def _clip(views: list[memoryview], start: int, end: int) -> Iterator[memoryview]:
    """The parts of consecutive `views` that fall in the byte range [start, end) of their concatenation."""
    offset = 0
    for view in views:
        low, high = max(start - offset, 0), min(end - offset, len(view))
        if low < high:
            yield view[low:high]
        offset += len(view)


def decrypt_checkpoint_stream(key: StageKey, pieces: Iterable[Bytes]) -> bytearray:
    """`decrypt_checkpoint` over pieces (e.g. `store.get_pieces(cid)`), decrypted straight from them
    into one plaintext buffer: the ciphertext is never joined into a buffer of its own.

    The plaintext is returned only after the tag has been checked: nothing unauthenticated leaks.
    """
    views = [memoryview(piece).cast("B") for piece in pieces]
    total = sum(len(view) for view in views)
    if total < HEADER_LEN + _TAG_LEN:
        raise _truncated(total)
    header = b"".join(_clip(views, 0, HEADER_LEN))
    tag = b"".join(_clip(views, total - _TAG_LEN, total))
    decryptor = Cipher(algorithms.AES(key.secret), modes.GCM(_check_header(key, header))).decryptor()
    decryptor.authenticate_additional_data(header)
    plaintext = bytearray(total - HEADER_LEN - _TAG_LEN + 15)  # update_into wants block size - 1 spare
    written = 0
    with memoryview(plaintext) as target:
        for part in _clip(views, HEADER_LEN, total - _TAG_LEN):
            written += decryptor.update_into(part, target[written:])
    try:
        decryptor.finalize_with_tag(tag)
    except InvalidTag:
        raise _altered() from None
    del plaintext[written:]
    return plaintext


def generate_encryption_keypair() -> tuple[bytes, bytes]:
    """A new X25519 key pair (private, public), 32 raw bytes each; the public one goes on-chain at join."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private: bytes) -> bytes:
    """The X25519 public key (32 bytes) of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _box_key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=32 + _NONCE_LEN,
        salt=ephemeral_pub + recipient_pub,
        info=b"pm/sealed-stage-key/v1",
    ).derive(shared)
    return okm[:32], okm[32:]


def seal_key(recipient_public: bytes, key: StageKey) -> bytes:
    """Seal a stage key to a recipient's registered X25519 public key (32 bytes)."""
    if len(recipient_public) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    box_key, nonce = _box_key(shared, ephemeral_pub, recipient_public)
    head = SEALED_MAGIC + bytes([VERSION]) + ephemeral_pub
    return head + AESGCM(box_key).encrypt(nonce, key._payload(), head)


def open_sealed_key(recipient_private: bytes, sealed: bytes) -> StageKey:
    """Open a sealed stage key with the recipient's X25519 private key; DecryptionError if not theirs."""
    if len(sealed) != _SEALED_HEAD_LEN + _KEY_PAYLOAD_LEN + _TAG_LEN or sealed[:4] != SEALED_MAGIC:
        raise DecryptionError("not a sealed stage key (bad magic or length)")
    if sealed[4] != VERSION:
        raise DecryptionError(f"unsupported sealed key version {sealed[4]} (this code reads {VERSION})")
    private = X25519PrivateKey.from_private_bytes(recipient_private)
    ephemeral_pub = sealed[5:_SEALED_HEAD_LEN]
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
    box_key, nonce = _box_key(shared, ephemeral_pub, private.public_key().public_bytes_raw())
    try:
        payload = AESGCM(box_key).decrypt(nonce, sealed[_SEALED_HEAD_LEN:], sealed[:_SEALED_HEAD_LEN])
    except InvalidTag:
        raise DecryptionError(
            "sealed key does not open with this private key: not for this recipient, or altered"
        ) from None
    return StageKey(int.from_bytes(payload[:32], "big"), payload[32], payload[33:])
