"""Golden vectors for the byte formats others depend on: the dataset manifest and shard layout, the
trace step record and its Merkle root, the encrypted checkpoint blob, the sealed stage key.

Each vector is a small file in vectors/, made once and checked in; a test fails on any byte of
difference, so a change to a format (which would orphan CIDs and digests already on-chain) is a
deliberate act: rewrite the vectors with `PM_GOLDEN_WRITE=1 pytest tests/offchain/golden` and
review the diff. Besides the bytes, each test rebuilds what it can from the documented layout
with independent code (hashlib, cryptography), so the vectors also pin the construction.
"""

import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils import keccak

from offchain.data.prepare import PrepareOptions, prepare
from offchain.model.records import MicroBatchRecord, StepRecord
from offchain.proofs.trace import leaf_hash, merkle_proof, merkle_root, verify_merkle_proof
from offchain.storage import crypto
from offchain.storage.crypto import (
    StageKey,
    decrypt_checkpoint,
    encrypt_checkpoint,
    encrypt_checkpoint_stream,
)
from offchain.storage.embedded import EmbeddedStore

VECTORS = Path(__file__).parent / "vectors"
WRITE = os.environ.get("PM_GOLDEN_WRITE") == "1"


def golden(name: str, data: bytes) -> bytes:
    """The checked-in vector `name` (first written from `data` in write mode); compare `data` to it."""
    path = VECTORS / name
    if WRITE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path.read_bytes()


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# -- dataset manifest and shard layout -----------------------------------------------------------

DATASET_OPTIONS = PrepareOptions(
    vocab_size=300, shard_tokens=256, context=8, batch_size=2, validation_fraction=0.2
)


def test_dataset_manifest_and_shards(tmp_path):
    """vectors/dataset/corpus.txt prepared with fixed options: every output file, and the CIDs."""
    store = EmbeddedStore(tmp_path / "store", fsync=False)
    prepared = prepare([VECTORS / "dataset" / "corpus.txt"], DATASET_OPTIONS, tmp_path / "out", store)
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == [
        "manifest.json",
        "tokenizer.json",
        "train-00000.bin",
        "train-00001.bin",
        "train-00002.bin",
        "validation-00000.bin",
    ]
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == golden(
            f"dataset/{name}", (tmp_path / "out" / name).read_bytes()
        ), name
    assert prepared.manifest_cid.encode() == golden("dataset/manifest.cid", prepared.manifest_cid.encode())
    # The layout, rebuilt by hand: shards are raw little-endian uint16 ids, the stream's tail is
    # the validation split, and the manifest lists each shard's CID and id count.
    manifest = json.loads(vector("dataset/manifest.json"))
    stream = b"".join(vector(f"dataset/{name}") for name in names if name.endswith(".bin"))
    ids = [int.from_bytes(stream[i : i + 2], "little") for i in range(0, len(stream), 2)]
    assert manifest["dtype"] == "uint16" and ids[-1] == manifest["tokenizer"]["eos_id"] == 1
    assert [s["tokens"] for s in manifest["splits"]["train"]["shards"]] == [
        256,
        256,
        len(ids) - 512 - manifest["splits"]["validation"]["tokens"],
    ]
    assert manifest["splits"]["validation"]["tokens"] == int(len(ids) * 0.2)
    corpus = (VECTORS / "dataset" / "corpus.txt").read_bytes()
    assert manifest["sources"] == [
        {"bytes": len(corpus), "format": "text", "sha256": hashlib.sha256(corpus).hexdigest()}
    ]


# -- trace step records and their Merkle root ----------------------------------------------------


def step_records() -> list[StepRecord]:
    """Five records (an odd count: the last node is promoted) with fixed digests and sources."""

    def digest(*parts: object) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    return [
        StepRecord(
            round=3,
            step=step,
            state_before=digest("before", step),
            state_after=digest("after", step),
            micro_batches=tuple(
                MicroBatchRecord(
                    index=mb,
                    inputs={"tokens": digest("tokens", step, mb), "targets": digest("targets", step, mb)},
                    outputs={"grad": digest("grad", step, mb)},
                    loss=2.5 - step / 8 + mb / 16,
                    source=((mb, 100 * step + mb), (2, 7)),
                )
                for mb in range(2)
            ),
        )
        for step in range(5)
    ]


def test_trace_step_records_and_merkle_root():
    records = step_records()
    document = {
        "records": [record.canonical_bytes().decode() for record in records],
        "leaves": [leaf_hash(record).hex() for record in records],
        "root": merkle_root(records).hex(),
        "proofs": [[node.hex() for node in merkle_proof(records, index)] for index in range(len(records))],
    }
    data = json.dumps(document, indent=1).encode() + b"\n"
    assert data == golden("trace-records.json", data)
    # Rebuilt by hand: leaf = keccak(0x00 | canonical JSON), node = keccak(0x01 | left | right),
    # an unpaired node promoted unchanged.
    leaves = [keccak(b"\x00" + record.encode()) for record in document["records"]]
    n01, n23 = keccak(b"\x01" + leaves[0] + leaves[1]), keccak(b"\x01" + leaves[2] + leaves[3])
    assert keccak(b"\x01" + keccak(b"\x01" + n01 + n23) + leaves[4]).hex() == document["root"]
    assert StepRecord.from_json(json.loads(document["records"][1])) == records[1]


def test_merkle_proofs_hold_only_for_their_own_leaf_and_index():
    records = step_records()
    root, count = merkle_root(records), len(records)
    for index, record in enumerate(records):
        assert verify_merkle_proof(record, index, count, merkle_proof(records, index), root)
    proof = merkle_proof(records, 2)
    assert not verify_merkle_proof(records[2], 3, count, proof, root)  # wrong index
    assert not verify_merkle_proof(records[2], 0, count, proof, root)
    assert not verify_merkle_proof(records[3], 3, count, proof, root)  # a proof replayed at its sibling index
    assert not verify_merkle_proof(records[2], 2, count - 1, proof, root)  # another tree size
    assert not verify_merkle_proof(records[2], 2, count, proof[:-1], root)  # a truncated proof
    assert not verify_merkle_proof(records[2], 2, count, [*proof, proof[0]], root)  # a padded one

    class PosingLeaf:
        """Claims the bytes of an inner node's two children as its own: without the 0x00/0x01
        prefixes it would hash to that node and prove membership one level up."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def canonical_bytes(self) -> bytes:
            return self.data

    l0, l1 = leaf_hash(records[0]), leaf_hash(records[1])
    upper = merkle_proof(records, 0)[1:]  # the path from node (0, 1) upward
    assert not verify_merkle_proof(PosingLeaf(l0 + l1), 0, (count + 1) // 2, upper, root)
    assert keccak(b"\x00" + l0 + l1) != keccak(b"\x01" + l0 + l1)


# -- encrypted checkpoint blob --------------------------------------------------------------------

KEY = StageKey(model_id=2**200 + 7, stage=3, secret=bytes(range(32)))
NONCE = bytes.fromhex("00112233445566778899aabb")
PLAINTEXT = b"stage state: weights and AdamW moments " * 7


def test_encrypted_checkpoint_blob(monkeypatch):
    monkeypatch.setattr(crypto.os, "urandom", lambda size: NONCE[:size])
    blob = bytes(encrypt_checkpoint(KEY, PLAINTEXT))
    assert blob == golden("checkpoint-blob.bin", blob)
    assert (
        b"".join(bytes(piece) for piece in encrypt_checkpoint_stream(KEY, PLAINTEXT, piece_size=64)) == blob
    )
    assert decrypt_checkpoint(KEY, vector("checkpoint-blob.bin")) == PLAINTEXT
    # Rebuilt by hand: "PMCK" | version 1 | key id | nonce, then AES-256-GCM with the header as AAD.
    payload = KEY.model_id.to_bytes(32, "big") + bytes([KEY.stage]) + KEY.secret
    key_id = hashlib.sha256(b"pm/stage-key-id/v1" + payload).digest()[:8]
    header = b"PMCK\x01" + key_id + NONCE
    assert blob == header + AESGCM(KEY.secret).encrypt(NONCE, PLAINTEXT, header)


# -- sealed stage key -----------------------------------------------------------------------------

RECIPIENT = X25519PrivateKey.from_private_bytes(bytes.fromhex("a8" * 32))
EPHEMERAL = bytes.fromhex("5d" * 31 + "ab")


def test_sealed_stage_key(monkeypatch):
    class FixedEphemeral:
        """X25519PrivateKey whose `generate` returns the vector's ephemeral key."""

        generate = staticmethod(lambda: X25519PrivateKey.from_private_bytes(EPHEMERAL))
        from_private_bytes = staticmethod(X25519PrivateKey.from_private_bytes)

    recipient_public = RECIPIENT.public_key().public_bytes_raw()
    monkeypatch.setattr(crypto, "X25519PrivateKey", FixedEphemeral)
    sealed = crypto.seal_key(recipient_public, KEY)
    monkeypatch.undo()
    assert sealed == golden("sealed-stage-key.bin", sealed)
    assert crypto.open_sealed_key(RECIPIENT.private_bytes_raw(), vector("sealed-stage-key.bin")) == KEY
    # Rebuilt by hand: "PMSB" | 1 | ephemeral public | AES-256-GCM(model id | stage | secret), key and
    # nonce from HKDF-SHA256 over X25519(ephemeral, recipient), salt = both public keys.
    ephemeral = X25519PrivateKey.from_private_bytes(EPHEMERAL)
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=44,
        salt=ephemeral_public + recipient_public,
        info=b"pm/sealed-stage-key/v1",
    ).derive(shared)
    head = b"PMSB\x01" + ephemeral_public
    payload = KEY.model_id.to_bytes(32, "big") + bytes([KEY.stage]) + KEY.secret
    assert sealed == head + AESGCM(okm[:32]).encrypt(okm[32:], payload, head)
