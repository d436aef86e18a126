"""The embedded store: verified round trips, corruption detection, pins and GC, CAR, crash safety."""

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offchain.storage.car import CarError, encode_header, write_car
from offchain.storage.cids import cid_text, parse_cid
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import BlockCorrupted, BlockNotFound, ContentTooLarge, InvalidCID, StorageError
from offchain.storage.store import Store
from offchain.storage.unixfs import KUBO_DEFAULT, decode_node, file_cid
from tests.offchain.storage.bombs import dag_bomb

REPO = Path(__file__).resolve().parents[3]
MiB = 1 << 20


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def store(tmp_path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def test_is_a_store(store):
    assert isinstance(store, Store)


@pytest.mark.parametrize("size", [0, 1, 1000, KUBO_DEFAULT.chunk_size + 1, 5 * MiB + 3])
def test_put_get_round_trip(store, size):
    data = blob(size, seed=size)
    cid = store.put(data)
    assert cid == file_cid(data)
    assert store.get(cid) == data
    assert store.has(cid)
    assert cid in store.pins()


@pytest.mark.slow
def test_put_get_64_mib(store):
    data = blob(64 * MiB, seed=64)
    cid = store.put(data)
    assert store.get(cid) == data


def leaf_block_paths(store: EmbeddedStore, cid: str) -> list[tuple[str, Path]]:
    root = decode_node(store._read_block(parse_cid(cid)))
    return [(cid_text(link), Path(store._block_file(link))) for link in root.links]


def test_flipped_byte_is_detected_named_and_repaired_by_a_new_put(store):
    data = blob(3 * KUBO_DEFAULT.chunk_size, seed=7)
    cid = store.put(data)
    leaf_cid, path = leaf_block_paths(store, cid)[1]
    corrupted = bytearray(path.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0x01
    path.write_bytes(bytes(corrupted))
    with pytest.raises(BlockCorrupted) as error:
        store.get(cid)
    assert leaf_cid in str(error.value)
    with pytest.raises(BlockNotFound):  # quarantined, never served
        store.get(cid)
    assert store.put(data) == cid
    assert store.get(cid) == data
    assert store.verify_all() == []


def test_unknown_and_invalid_cids(store):
    with pytest.raises(BlockNotFound):
        store.get(file_cid(b"never stored"))
    with pytest.raises(InvalidCID):
        store.get("not-a-cid")
    assert not store.has(file_cid(b"never stored"))


def test_gc_keeps_pinned_and_removes_unpinned(store):
    kept = store.put(blob(600_000, seed=1))
    dropped = store.put(blob(600_000, seed=2))
    unpinned = store.put(blob(10, seed=3), pin=False)
    store.unpin(dropped)
    result = store.gc()
    assert result.blocks_removed == 4 + 1  # 3 leaves + 1 parent of `dropped`, 1 block of `unpinned`
    assert result.bytes_freed > 600_000
    assert store.pins() == [kept]
    assert store.get(kept) == blob(600_000, seed=1)
    assert not store.has(dropped) and not store.has(unpinned)
    with pytest.raises(StorageError, match="not pinned"):
        store.unpin(dropped)


def test_pin_requires_the_whole_dag(store, tmp_path):
    cid = store.put(blob(600_000, seed=4), pin=False)
    _, leaf = leaf_block_paths(store, cid)[0]
    leaf.unlink()
    with pytest.raises(BlockNotFound):
        store.pin(cid)
    assert store.pins() == []


def test_car_round_trip_into_a_fresh_store(store, tmp_path):
    data = blob(2 * MiB + 5, seed=9)
    cid = store.put(data)
    car = io.BytesIO()
    written = store.export_car(cid, car)
    assert written == len(car.getvalue())
    assert car.getvalue()[1:].startswith(encode_header([parse_cid(cid)]))
    fresh = EmbeddedStore(tmp_path / "fresh")
    assert fresh.import_car(io.BytesIO(car.getvalue())) == [cid]
    assert fresh.pins() == [cid]
    assert fresh.get(cid) == data


def test_car_header_is_dag_cbor_as_the_spec_shows():
    root = parse_cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN")
    expected = bytes.fromhex("a265726f6f747381d82a58230012") + root[1:] + bytes.fromhex("6776657273696f6e01")
    assert encode_header([root]) == expected


def test_car_import_rejects_tampered_truncated_and_incomplete_cars(store, tmp_path):
    data = blob(600_000, seed=11)
    cid = store.put(data)
    car = io.BytesIO()
    store.export_car(cid, car)
    raw = car.getvalue()
    tampered = bytearray(raw)
    tampered[-100] ^= 0xFF
    with pytest.raises(BlockCorrupted):
        EmbeddedStore(tmp_path / "a").import_car(io.BytesIO(bytes(tampered)))
    with pytest.raises(CarError, match="truncated"):
        EmbeddedStore(tmp_path / "b").import_car(io.BytesIO(raw[:-10]))
    with pytest.raises(CarError):
        EmbeddedStore(tmp_path / "c").import_car(io.BytesIO(b"\x05hello"))
    root_only = io.BytesIO()
    write_car(root_only, [parse_cid(cid)], [(parse_cid(cid), store._read_block(parse_cid(cid)))])
    incomplete = EmbeddedStore(tmp_path / "d")
    with pytest.raises(BlockNotFound):
        incomplete.import_car(io.BytesIO(root_only.getvalue()))
    assert incomplete.pins() == []


PUT_FOREVER = """
import random, sys
from offchain.storage.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
for seed in range(1000):
    store.put(random.Random(seed).randbytes(16 << 20))
"""


def test_killed_mid_put_leaves_a_consistent_store(tmp_path):
    folder = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", PUT_FOREVER, str(folder)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "pins").exists() or len(list((folder / "pins").iterdir())) < 1:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        while not any((folder / "tmp").iterdir()):  # the next put is writing blocks: kill it now
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = EmbeddedStore(folder)
    interrupted = list((folder / "tmp").iterdir())
    print(f"killed with {len(store.pins())} puts finished and {len(interrupted)} blocks in flight")
    assert store.verify_all() == []
    blobs = [blob(16 * MiB, seed) for seed in range(len(store.pins()))]
    assert store.pins() == sorted(file_cid(data) for data in blobs)  # every finished put, no partial one
    for data in blobs:
        assert store.get(file_cid(data)) == data
    store.gc()
    assert not any((folder / "tmp").iterdir())
    assert store.put(b"after the crash") == file_cid(b"after the crash")


GC_FOREVER = """
import sys, time
from offchain.storage.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
store.gc()
print("collecting", flush=True)
while True:
    store.gc()
    time.sleep(0.005)  # flock is not fair: leave the puts a gap to take the lock
"""


def test_concurrent_gc_never_takes_blocks_of_a_put_in_progress(tmp_path):
    folder = tmp_path / "store"
    store = EmbeddedStore(folder, fsync=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    collector = subprocess.Popen(
        [sys.executable, "-c", GC_FOREVER, str(folder)], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert collector.stdout.readline() == "collecting\n"
        blobs = [blob(600_000, seed=100 + index) for index in range(10)]
        cids = [store.put(data) for data in blobs]
        assert collector.poll() is None
    finally:
        collector.kill()
        collector.wait()
    assert [store.get(cid) for cid in cids] == blobs


def test_max_size_is_exact(store):
    data = blob(KUBO_DEFAULT.chunk_size * 2 + 5, seed=7)
    cid = store.put(data)
    assert store.get(cid, max_size=len(data)) == data
    with pytest.raises(ContentTooLarge, match=f"larger than the {len(data) - 1}-byte limit"):
        store.get(cid, max_size=len(data) - 1)


@pytest.mark.parametrize("honest_sizes", [True, False])
def test_a_dag_bomb_is_refused_while_it_is_read(store, honest_sizes):
    """174^4 x 256 KiB = 229 TB from 5 blocks: refused after reading at most the limit."""
    bomb = dag_bomb(store, levels=4, leaf=blob(KUBO_DEFAULT.chunk_size), honest_sizes=honest_sizes)
    read = []
    original = store._read_block
    store._read_block = lambda cid: read.append(cid) or original(cid)
    with pytest.raises(ContentTooLarge, match=f"{bomb} .*1048576-byte limit"):
        store.get(bomb, max_size=MiB)
    assert len(read) <= 1 + 4 + MiB // KUBO_DEFAULT.chunk_size + 1


def test_a_dag_of_empty_leaves_is_refused_by_its_block_count(store):
    """Nothing to count in bytes (every leaf is empty), so the links still to follow are counted."""
    bomb = dag_bomb(store, levels=6, leaf=b"")
    with pytest.raises(ContentTooLarge, match="needs more than 65 blocks"):
        store.get(bomb, max_size=64 * 1024)
