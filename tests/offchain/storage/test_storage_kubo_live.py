"""Against a real Kubo daemon, when one is given: PM_KUBO_API=http://127.0.0.1:5001 pytest this file.

Start one with `ipfs init && ipfs daemon --offline` (any kubo >= 0.9; RPC on port 5001). The
daemon's own CIDs are checked against ours for every size, and CAR files are moved both ways.
"""

import io
import os
import random

import pytest

from offchain.storage.embedded import EmbeddedStore
from offchain.storage.kubo import KuboStore
from offchain.storage.unixfs import KUBO_DEFAULT, file_cid

API = os.environ.get("PM_KUBO_API")
pytestmark = pytest.mark.skipif(not API, reason="set PM_KUBO_API to a Kubo RPC URL to run the live tests")
CHUNK, FANOUT = KUBO_DEFAULT.chunk_size, KUBO_DEFAULT.max_links


@pytest.fixture
def kubo():
    store = KuboStore(API)  # no spool: a daemon that goes away must fail the test
    added: list[str] = []
    yield store, added
    for cid in added:
        store.unpin(cid)
    store.close()


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, FANOUT * CHUNK + 1])
def test_kubo_prints_our_cid_and_serves_the_bytes(kubo, size):
    store, added = kubo
    data = random.Random(size).randbytes(size)
    cid = store.put(data)  # raises if kubo's CID differs from ours
    added.append(cid)
    assert cid == file_cid(data)
    assert store.get(cid) == data
    assert cid in store.pins()


def test_car_both_ways(kubo, tmp_path):
    store, added = kubo
    data = random.Random(7).randbytes(3 * CHUNK + 11)
    cid = store.put(data)
    added.append(cid)
    car = io.BytesIO()
    store.export_car(cid, car)
    embedded = EmbeddedStore(tmp_path / "embedded")
    assert embedded.import_car(io.BytesIO(car.getvalue())) == [cid]
    assert embedded.get(cid) == data

    other = random.Random(8).randbytes(CHUNK + 5)
    other_cid = embedded.put(other)
    out = io.BytesIO()
    embedded.export_car(other_cid, out)
    assert store.import_car(io.BytesIO(out.getvalue())) == [other_cid]
    added.append(other_cid)
    assert store.get(other_cid) == other
