"""The claim manifest: canonical bytes fixed to the agreed format, a round trip that refuses every
non-canonical or malformed document, and roundsRoot proofs that hold for every round of a claim
and for no altered record."""

import dataclasses
import hashlib
import json

import pytest

from offchain.proofs.manifest import ClaimManifest, ManifestError, RoundRecord, verify_round
from offchain.proofs.trace import tree_leaf

PARENT = "QmPChd2hVbrJ6bfo3WBcTW4iZnpHm8TEzWkLHmLpXhF68A"


def record(round_: int, units: int = 8) -> RoundRecord:
    return RoundRecord(
        round=round_,
        checkpoint_cid=f"QmCheckpoint{round_}",
        checkpoint_digest=hashlib.sha256(b"state %d" % round_).digest(),
        trace_cid=f"QmTrace{round_}",
        trace_root=hashlib.sha256(b"trace %d" % round_).digest(),
        work_units=units,
    )


def manifest(first: int, count: int, parent: str | None = PARENT) -> ClaimManifest:
    return ClaimManifest(1, 2, parent, tuple(record(r) for r in range(first, first + count)))


def test_canonical_bytes_are_the_agreed_format():
    one = manifest(3, 1)
    digest = one.rounds[0].checkpoint_digest.hex()
    root = one.rounds[0].trace_root.hex()
    assert one.canonical_bytes().decode() == (
        '{"first_round":3,"last_round":3,"model_id":1,"parent_cid":"' + PARENT + '",'
        '"rounds":[{"checkpoint_cid":"QmCheckpoint3","checkpoint_digest":"' + digest + '",'
        '"profile":null,"round":3,"trace_cid":"QmTrace3","trace_root":"' + root + '","work_units":8}],'
        '"stage":2,"version":1}'
    )
    leaf = tree_leaf(hashlib.sha256(one.rounds[0].canonical_bytes()).digest())
    assert one.rounds_root() == leaf, "a one-round claim's root is its record's leaf"
    seed = manifest(1, 2, parent=None)
    assert b'"parent_cid":null' in seed.canonical_bytes()
    assert (seed.work_units, seed.checkpoint.round) == (16, 2)


def test_round_trip_and_refusals():
    five = manifest(4, 5)
    assert ClaimManifest.from_bytes(five.canonical_bytes()) == five
    document = five.to_json()
    refused = {
        "not JSON": b"\xff{",
        "canonical form": json.dumps(document, indent=1).encode(),
        "expected the fields": json.dumps({**document, "extra": 1}, sort_keys=True).encode(),
        "do not match its rounds": json.dumps({**document, "last_round": 9}, sort_keys=True).encode(),
        "contiguous": json.dumps(
            {**document, "rounds": [document["rounds"][0], document["rounds"][2]], "last_round": 6},
            sort_keys=True,
        ).encode(),
        "64 lowercase hex": json.dumps(
            {**document, "rounds": [{**document["rounds"][0], "trace_root": "AB"}, *document["rounds"][1:]]},
            sort_keys=True,
        ).encode(),
        "non-negative integer": json.dumps({**document, "stage": -1}, sort_keys=True).encode(),
        "version": json.dumps({**document, "version": 2}, sort_keys=True).encode(),
    }
    for reason, data in refused.items():
        with pytest.raises(ManifestError, match=reason):
            ClaimManifest.from_bytes(data.replace(b", ", b",").replace(b": ", b":"))
    with pytest.raises(ManifestError, match="at least one round"):
        ClaimManifest(1, 0, None, ())
    with pytest.raises(ManifestError, match="start at 1"):
        manifest(0, 2)
    with pytest.raises(ManifestError, match="at least one work unit"):
        ClaimManifest(1, 0, None, (record(1, units=0),))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 12])
def test_every_round_proves_against_the_root_and_no_altered_record_does(count):
    claim = manifest(7, count)
    root = claim.rounds_root()
    for round_ in range(7, 7 + count):
        proof = claim.proof(round_)
        assert verify_round(claim.record(round_), 7, 7 + count - 1, proof, root)
        forged = dataclasses.replace(claim.record(round_), work_units=9)
        assert not verify_round(forged, 7, 7 + count - 1, proof, root)
    with pytest.raises(ManifestError, match="not in this claim"):
        claim.proof(7 + count)
    other = manifest(7, count, parent=None)
    assert other.rounds_root() == root, "the root covers the rounds only; the parent is on-chain"
