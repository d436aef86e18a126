"""UnixFS DAG bombs: a few distinct blocks that expand into a huge file, because a parent may link
the same child any number of times. Written into a store through a CAR import, as any peer's
content would arrive."""

from __future__ import annotations

import io

from offchain.storage.car import write_car
from offchain.storage.cids import cid_text, cid_v0
from offchain.storage.store import Store
from offchain.storage.unixfs import Link, leaf_block, parent_block


def dag_bomb(store: Store, *, levels: int, leaf: bytes, fanout: int = 174, honest_sizes: bool = True) -> str:
    """Store a DAG of `levels` parents over one leaf, each parent linking its child `fanout` times:
    len(leaf) * fanout**levels bytes from levels + 1 blocks. honest_sizes=False makes every parent
    declare one byte per child, so only counting the bytes read reveals the size."""
    block = b"".join(leaf_block(leaf))
    link = Link(cid_v0(block), len(block), len(leaf))
    blocks = [(link.cid, block)]
    for _ in range(levels):
        child = link if honest_sizes else Link(link.cid, link.tsize, 1)
        parent = parent_block([child] * fanout)
        link = Link(cid_v0(parent), len(parent) + fanout * link.tsize, fanout * child.file_size)
        blocks.append((link.cid, parent))
    car = io.BytesIO()
    write_car(car, [link.cid], blocks)
    car.seek(0)
    (root,) = store.import_car(car)
    assert root == cid_text(link.cid)
    return root
