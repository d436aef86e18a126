"""The Merkle commitment to a round's step records (its root is the claim's `traceRoot`).

Leaves are keccak256(0x00 || record canonical bytes), inner nodes keccak256(0x01 || left ||
right): the prefixes keep a leaf from posing as a node. An unpaired node is promoted unchanged to
the next level. keccak256 so a contract can check a step's inclusion proof cheaply."""

from __future__ import annotations

from eth_utils import keccak

from offchain.model.records import StepRecord, Trace

__all__ = ["Trace", "leaf_hash", "merkle_proof", "merkle_root", "verify_merkle_proof"]


def leaf_hash(record: StepRecord) -> bytes:
    return keccak(b"\x00" + record.canonical_bytes())


def _node(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def _levels(records: list[StepRecord]) -> list[list[bytes]]:
    if not records:
        raise ValueError("a trace without step records has no Merkle root")
    levels = [[leaf_hash(record) for record in records]]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append(
            [_node(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
        )
    return levels


def merkle_root(records: list[StepRecord]) -> bytes:
    """32-byte root over the records in step order."""
    return _levels(records)[-1][0]


def merkle_proof(records: list[StepRecord], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up (levels where it has no sibling are skipped)."""
    proof = []
    for level in _levels(records)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_merkle_proof(record: StepRecord, index: int, count: int, proof: list[bytes], root: bytes) -> bool:
    """Whether `record` is leaf `index` of a `count`-leaf tree with `root`."""
    node, width, remaining = leaf_hash(record), count, list(proof)
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if not remaining:
                return False
            other = remaining.pop(0)
            node = _node(node, other) if index % 2 == 0 else _node(other, node)
        index //= 2
        width = (width + 1) // 2
    return not remaining and node == root
