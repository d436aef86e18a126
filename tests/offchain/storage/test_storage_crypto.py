"""Checkpoint encryption fails loudly on every kind of misuse; sealed keys open only for their recipient."""

import os

import pytest

from offchain.storage.crypto import (
    HEADER_LEN,
    StageKey,
    decrypt_checkpoint,
    encrypt_checkpoint,
    generate_encryption_keypair,
    open_sealed_key,
    public_key_of,
    seal_key,
)
from offchain.storage.errors import DecryptionError

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
