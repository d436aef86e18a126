"""Checkpoint encryption fails loudly on every kind of misuse; sealed keys open only for their recipient."""

import os
import random

import pytest

from offchain.storage.crypto import (
    HEADER_LEN,
    StageKey,
    decrypt_checkpoint,
    decrypt_checkpoint_stream,
    encrypt_checkpoint,
    encrypt_checkpoint_stream,
    generate_encryption_keypair,
    open_sealed_key,
    public_key_of,
    seal_key,
)
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import DecryptionError
from offchain.storage.unixfs import file_cid

KEY = StageKey.generate(model_id=7, stage=1)
PLAINTEXT = os.urandom(300_000)


def test_round_trip_and_header_layout():
    blob = encrypt_checkpoint(KEY, PLAINTEXT)
    assert blob[:4] == b"PMCK" and blob[4] == 1 and blob[5:13] == KEY.key_id
    assert len(blob) == HEADER_LEN + len(PLAINTEXT) + 16
    assert PLAINTEXT[:64] not in blob
    assert decrypt_checkpoint(KEY, blob) == PLAINTEXT
    assert encrypt_checkpoint(KEY, PLAINTEXT)[13:25] != blob[13:25]  # fresh nonce each time


def test_empty_plaintext():
    assert decrypt_checkpoint(KEY, encrypt_checkpoint(KEY, b"")) == b""


def test_wrong_key_is_named():
    blob = encrypt_checkpoint(KEY, PLAINTEXT)
    with pytest.raises(DecryptionError, match="wrong key"):
        decrypt_checkpoint(StageKey.generate(7, 1), blob)
    same_secret_other_stage = StageKey(7, 2, KEY.secret)
    with pytest.raises(DecryptionError, match="wrong key"):
        decrypt_checkpoint(same_secret_other_stage, blob)


@pytest.mark.parametrize("cut", [1, 16, len(PLAINTEXT) // 2])
def test_truncated_ciphertext_fails(cut):
    blob = bytes(encrypt_checkpoint(KEY, PLAINTEXT))
    with pytest.raises(DecryptionError, match="altered or truncated"):
        decrypt_checkpoint(KEY, blob[:-cut])


def test_truncated_below_header_fails():
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_checkpoint(KEY, encrypt_checkpoint(KEY, PLAINTEXT)[:30])


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "bad magic"),
        (4, "version"),
        (6, "wrong key"),
        (20, "altered"),
        (HEADER_LEN + 5, "altered"),
        (-1, "altered"),
    ],
)
def test_altered_header_or_body_fails(offset, message):
    blob = encrypt_checkpoint(KEY, PLAINTEXT)
    blob[offset] ^= 0x01
    with pytest.raises(DecryptionError, match=message):
        decrypt_checkpoint(KEY, blob)


def test_repr_hides_the_secret():
    assert KEY.secret.hex() not in repr(KEY) and str(KEY.secret) not in repr(KEY)


def test_sealed_key_opens_only_for_the_recipient():
    private, public = generate_encryption_keypair()
    assert len(public) == 32 and public_key_of(private) == public
    sealed = seal_key(public, KEY)
    assert KEY.secret not in sealed
    assert open_sealed_key(private, sealed) == KEY
    assert seal_key(public, KEY) != sealed  # fresh ephemeral key per box
    other_private, _ = generate_encryption_keypair()
    with pytest.raises(DecryptionError, match="not for this recipient"):
        open_sealed_key(other_private, sealed)
    tampered = bytearray(sealed)
    tampered[-20] ^= 0x80
    with pytest.raises(DecryptionError):
        open_sealed_key(private, bytes(tampered))
    with pytest.raises(DecryptionError, match="not a sealed stage key"):
        open_sealed_key(private, sealed[:-1])


def test_handover_then_decrypt_checkpoint():
    """The flow: the first member encrypts, seals the key to a newcomer, the newcomer decrypts."""
    newcomer_private, newcomer_public = generate_encryption_keypair()
    blob = encrypt_checkpoint(KEY, PLAINTEXT)
    received = open_sealed_key(newcomer_private, seal_key(newcomer_public, KEY))
    assert decrypt_checkpoint(received, blob) == PLAINTEXT


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 3, 15, 16, 17, 25, 4096, 70_000])
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


STREAM_SIZES = [0, 1, 64 - 41, 64 - 40, 64 - 25, 64 - 16, 64, 65, 128 - 41, 1000]


@pytest.mark.parametrize("size", STREAM_SIZES)
def test_stream_encryption_is_the_same_format_in_fixed_pieces(size):
    plaintext = os.urandom(size)
    pieces = [bytes(piece) for piece in encrypt_checkpoint_stream(KEY, plaintext, piece_size=64)]
    assert all(len(piece) == 64 for piece in pieces[:-1]) and 0 < len(pieces[-1]) <= 64
    blob = b"".join(pieces)
    assert len(blob) == HEADER_LEN + size + 16 and blob[:13] == b"PMCK\x01" + KEY.key_id
    assert decrypt_checkpoint(KEY, blob) == plaintext
    assert decrypt_checkpoint_stream(KEY, pieces) == plaintext


@pytest.mark.parametrize("seed", range(4))
def test_stream_decryption_of_arbitrary_pieces(seed):
    blob = bytes(encrypt_checkpoint(KEY, PLAINTEXT))
    assert decrypt_checkpoint_stream(KEY, split_randomly(blob, seed)) == PLAINTEXT


def test_stream_decryption_fails_loudly():
    blob = bytes(encrypt_checkpoint(KEY, PLAINTEXT))
    with pytest.raises(DecryptionError, match="wrong key"):
        decrypt_checkpoint_stream(StageKey.generate(7, 1), split_randomly(blob, 1))
    with pytest.raises(DecryptionError, match="altered or truncated"):
        decrypt_checkpoint_stream(KEY, split_randomly(blob[:-1], 2))
    altered = bytearray(blob)
    altered[HEADER_LEN + 1000] ^= 0x04
    with pytest.raises(DecryptionError, match="altered or truncated"):
        decrypt_checkpoint_stream(KEY, split_randomly(bytes(altered), 3))
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_checkpoint_stream(KEY, [blob[:40]])
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_checkpoint_stream(KEY, [])


@pytest.mark.parametrize("size", [0, 262144 - 41, 262144 - 40, 262144 - 20, 3 * 262144 + 5])
def test_streamed_checkpoint_through_the_embedded_store(tmp_path, size):
    store = EmbeddedStore(tmp_path / "store")
    plaintext = os.urandom(size)
    cid = store.put(encrypt_checkpoint_stream(KEY, plaintext))
    blob = store.get(cid)
    assert file_cid(blob) == cid and len(blob) == HEADER_LEN + size + 16
    assert decrypt_checkpoint(KEY, blob) == plaintext
    assert decrypt_checkpoint_stream(KEY, store.get_pieces(cid)) == plaintext


def test_interleaved_streams_in_one_thread_never_share_buffers():
    """A finished stream's buffers go to the next stream of the thread; a live one keeps its own.
    Each piece is read only once the next one has been requested (as the store does)."""
    plaintexts = {"a": os.urandom(1000), "b": os.urandom(700), "c": os.urandom(900)}
    for _ in encrypt_checkpoint_stream(KEY, b"leaves its buffers spare", piece_size=64):
        pass
    streams = {name: encrypt_checkpoint_stream(KEY, plaintexts[name], piece_size=64) for name in "ab"}
    blobs = {name: bytearray() for name in plaintexts}
    held: dict[str, memoryview | bytes] = {name: b"" for name in plaintexts}
    order = ["a", "b"] * 12 + ["c", "a"] * 12  # b ends first; c starts while a runs, after b ended
    for name in order:
        if name not in streams:
            streams[name] = encrypt_checkpoint_stream(KEY, plaintexts[name], piece_size=64)
        piece = next(streams[name], b"")
        blobs[name] += held[name]
        held[name] = piece
    for name, stream in streams.items():
        for piece in stream:
            blobs[name] += held[name]
            held[name] = piece
        blobs[name] += held[name]
    for name, plaintext in plaintexts.items():
        assert decrypt_checkpoint(KEY, bytes(blobs[name])) == plaintext, name
