"""The Merkle commitments of the claims: a round's step records (root = that round's `traceRoot`)
and, through the same tree, a claim's round records (root = `roundsRoot`, offchain/proofs/manifest.py).

Leaves are keccak256(0x00 || leaf data), inner nodes keccak256(0x01 || left || right): the
prefixes keep a leaf from posing as a node. An unpaired node is promoted unchanged to the next
level. keccak256 so a contract can check an inclusion proof cheaply."""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

from offchain.model.records import StepRecord, Trace

__all__ = [
    "Trace",
    "leaf_hash",
    "merkle_proof",
    "merkle_root",
    "proof_of_leaves",
    "root_of_leaves",
    "tree_leaf",
    "verify_leaf_proof",
    "verify_merkle_proof",
]


def tree_leaf(data: bytes) -> bytes:
    """The leaf node of `data` (a step record's canonical bytes, a round record's digest)."""
    return keccak(b"\x00" + data)


def leaf_hash(record: StepRecord) -> bytes:
    return tree_leaf(record.canonical_bytes())


def _node(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append(
            [_node(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
        )
    return levels


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """32-byte root over leaf nodes (made by `tree_leaf`) in order."""
    return _levels(leaves)[-1][0]


def proof_of_leaves(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up (levels where it has no sibling are skipped)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of a {len(leaves)}-leaf tree")
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_leaf_proof(leaf: bytes, index: int, count: int, proof: list[bytes], root: bytes) -> bool:
    """Whether the leaf node `leaf` is leaf `index` of a `count`-leaf tree with `root`."""
    if not 0 <= index < count:
        return False
    node, width, remaining = leaf, count, list(proof)
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


def merkle_root(records: list[StepRecord]) -> bytes:
    """32-byte root over the step records in step order (a round's `traceRoot`)."""
    if not records:
        raise ValueError("a trace without step records has no Merkle root")
    return root_of_leaves([leaf_hash(record) for record in records])


def merkle_proof(records: list[StepRecord], index: int) -> list[bytes]:
    """Sibling hashes from step record `index` up."""
    return proof_of_leaves([leaf_hash(record) for record in records], index)


def verify_merkle_proof(record: StepRecord, index: int, count: int, proof: list[bytes], root: bytes) -> bool:
    """Whether `record` is leaf `index` of a `count`-leaf tree with `root`."""
    return verify_leaf_proof(leaf_hash(record), index, count, proof, root)
