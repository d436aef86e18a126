"""The Kubo backend against a server that speaks the Kubo RPC shapes (see fake_kubo.py)."""

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from offchain.storage.crypto import StageKey, decrypt_checkpoint_stream, encrypt_checkpoint_stream
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import (
    BlockCorrupted,
    ContentTooLarge,
    ContentUnavailable,
    KuboCommandError,
    KuboError,
    KuboUnreachable,
)
from offchain.storage.kubo import KuboStore
from offchain.storage.store import Store, open_store
from offchain.storage.unixfs import KUBO_DEFAULT, Profile, file_cid
from tests.offchain.storage.bombs import dag_bomb
from tests.offchain.storage.fake_kubo import KUBO_ADD_DEFAULTS, FakeKubo, free_port

REPO = Path(__file__).resolve().parents[3]


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def kubo(tmp_path):
    server = FakeKubo(tmp_path / "kubo").start()
    yield server
    server.stop()


@pytest.fixture
def client(kubo, tmp_path):
    store = KuboStore(kubo.url, spool_dir=tmp_path / "spool", retries=1, backoff=0.01)
    yield store
    store.close()


def test_open_store_picks_the_backend(tmp_path, kubo):
    assert isinstance(open_store(None, tmp_path / "s"), EmbeddedStore)
    kubo_store = open_store(kubo.url, tmp_path / "s")
    assert isinstance(kubo_store, KuboStore) and isinstance(kubo_store, Store)
    assert kubo_store.spool.folder == tmp_path / "s" / "spool"


def test_put_get_pins_round_trip_with_kubo_add_settings(client, kubo):
    data = blob(700_000, seed=1)
    cid = client.put(data)
    assert cid == file_cid(data)
    assert client.get(cid) == data
    assert client.has(cid) and not client.has(file_cid(b"other"))
    assert client.pins() == [cid]
    client.unpin(cid)
    assert client.pins() == []
    client.pin(cid)
    assert client.pins() == [cid]
    assert client.version() == "0.32.1"
    adds = [query for method, command, query in kubo.requests if command == "add"]
    assert adds and all(
        query.items() >= KUBO_ADD_DEFAULTS.items() and query["pin"] == "true" for query in adds
    )
    assert {method for method, _, _ in kubo.requests} == {"POST"}
    stats = [query for _, command, query in kubo.requests if command == "block/stat"]
    assert stats and all(query["offline"] == "true" for query in stats)  # `has` never searches the network


def test_streamed_encrypted_checkpoint_through_kubo(client):
    key = StageKey.generate(3, 0)
    plaintext = blob(600_000, seed=9)
    cid = client.put(encrypt_checkpoint_stream(key, plaintext))
    assert cid == file_cid(client.get(cid))
    assert decrypt_checkpoint_stream(key, client.get_pieces(cid)) == plaintext


def test_kubo_error_messages_are_passed_on(client):
    cid = client.put(b"x", pin=False)
    with pytest.raises(KuboCommandError, match="not pinned"):
        client.unpin(cid)


def test_car_moves_between_kubo_and_the_embedded_store(client, tmp_path):
    data = blob(1_000_000, seed=2)
    cid = client.put(data)
    car = io.BytesIO()
    client.export_car(cid, car)
    embedded = EmbeddedStore(tmp_path / "embedded")
    assert embedded.import_car(io.BytesIO(car.getvalue())) == [cid]
    assert embedded.get(cid) == data

    other = blob(600_000, seed=3)
    other_cid = embedded.put(other)
    car = io.BytesIO()
    embedded.export_car(other_cid, car)
    assert client.import_car(io.BytesIO(car.getvalue())) == [other_cid]
    assert other_cid in client.pins() and client.get(other_cid) == other


def test_get_walks_and_verifies_blocks_of_a_dag_built_another_way(client, tmp_path):
    small_chunks = EmbeddedStore(tmp_path / "small", profile=Profile(chunk_size=1000, max_links=7))
    data = blob(20_000, seed=4)
    cid = small_chunks.put(data)
    assert cid != file_cid(data)
    car = io.BytesIO()
    small_chunks.export_car(cid, car)
    client.import_car(io.BytesIO(car.getvalue()))
    assert client.get(cid) == data


@pytest.mark.parametrize("size", [100, 700_000])
def test_corrupted_bytes_from_the_daemon_are_refused(client, kubo, size):
    cid = client.put(blob(size, seed=size))
    kubo.corrupt = True
    with pytest.raises(BlockCorrupted, match="as served by kubo"):
        client.get(cid)


def test_credentials_in_the_url(tmp_path):
    server = FakeKubo(tmp_path / "kubo", credentials=("alice", "s3cret")).start()
    try:
        authed = KuboStore(f"http://alice:s3cret@127.0.0.1:{server.port}", retries=0)
        assert authed.put(b"secret-protected") == file_cid(b"secret-protected")
        assert "s3cret" not in repr(authed) and "s3cret" not in authed.api_url
        with pytest.raises(KuboError, match=r"HTTP 403.*credentials"):
            KuboStore(server.url, retries=0).pins()
    finally:
        server.stop()


def test_gateway_instead_of_rpc_is_explained(client, kubo):
    kubo.reject_status = 405
    with pytest.raises(KuboError, match=r"HTTP 405.*RPC API"):
        client.pins()


def test_proxy_errors_are_retried_then_reported(client, kubo):
    kubo.reject_status = 503
    with pytest.raises(KuboUnreachable, match=r"HTTP 503.*2 attempts"):
        client.pins()
    assert len(kubo.requests) == 2


def test_timeout_is_reported(kubo):
    kubo.delay = 1.0
    with pytest.raises(KuboUnreachable, match=r"no answer within 0\.2s"):
        KuboStore(kubo.url, timeout=0.2, retries=0).version()
    kubo.delay = 0


def test_connection_refused_without_spool_is_an_error():
    store = KuboStore(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    with pytest.raises(KuboUnreachable, match=r"connection refused.*ipfs daemon.*3 attempts"):
        store.put(b"nowhere to go")


PUT_WHILE_DOWN = """
import sys
from offchain.storage.kubo import KuboStore
store = KuboStore(sys.argv[1], spool_dir=sys.argv[2], retries=0)
print(store.put(open(sys.argv[3], "rb").read()))
"""


def test_spool_survives_a_restart_and_drains_when_the_daemon_is_back(tmp_path):
    server = FakeKubo(tmp_path / "kubo")
    spool = tmp_path / "spool"
    blobs = [blob(300_000, seed=5), b"small"]
    cids = []
    for index, data in enumerate(blobs):  # each put in its own process, which then exits
        path = tmp_path / f"blob{index}"
        path.write_bytes(data)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-c", PUT_WHILE_DOWN, server.url, str(spool), str(path)]
        done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        cids.append(done.stdout.strip())
    assert cids == [file_cid(data) for data in blobs]
    assert len(list(spool.iterdir())) == 2

    store = KuboStore(server.url, spool_dir=spool, retries=0)
    assert store.get(cids[0]) == blobs[0]  # served from the spool while the daemon is down
    with pytest.raises(KuboUnreachable):
        store.drain()
    server.start()
    try:
        assert store.drain() == 2
        assert list(spool.iterdir()) == []
        assert server.store.pins() == sorted(cids)
        assert [store.get(cid) for cid in cids] == blobs
    finally:
        server.stop()


def test_a_put_drains_the_spool_first(tmp_path):
    server = FakeKubo(tmp_path / "kubo")
    store = KuboStore(server.url, spool_dir=tmp_path / "spool", retries=0)
    spooled = store.put(b"while down")
    server.start()
    try:
        assert store.put(b"when back") == file_cid(b"when back")
        assert server.store.pins() == sorted([spooled, file_cid(b"when back")])
        assert store.spool.entries() == []
    finally:
        server.stop()


def test_bad_url_is_a_clear_error():
    with pytest.raises(KuboError, match="not a valid Kubo RPC URL"):
        KuboStore("http://[::1", retries=0)


def test_max_size_caps_what_kubo_reads_of_a_dag_bomb(client, kubo):
    bomb = dag_bomb(kubo.store, levels=3, leaf=blob(KUBO_DEFAULT.chunk_size, seed=5))
    with pytest.raises(ContentTooLarge, match=f"{bomb} is larger than the 1048576-byte limit"):
        client.get(bomb, max_size=1 << 20)
    assert kubo.cat_bytes_served == (1 << 20) + 1  # asked for one byte past the limit, no more
    data = blob(300_000, seed=6)
    cid = client.put(data)
    assert client.get(cid, max_size=len(data)) == data
    with pytest.raises(ContentTooLarge):
        client.get(cid, max_size=len(data) - 1)


def test_content_nobody_provides_is_unavailable_not_unreachable(client, kubo):
    missing = EmbeddedStore(kubo.store.folder.parent / "elsewhere").put(b"never given to this daemon")
    with pytest.raises(ContentUnavailable, match="`cat` failed"):
        client.get(missing)
    _, command, query = kubo.requests[-1]
    assert (command, query["timeout"]) == ("cat", "30s")  # kubo gives up on its own, it does not hang
