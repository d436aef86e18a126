"""`pm store ...` end to end in a subprocess, on both backends, including the one-line errors."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from offchain.storage.unixfs import file_cid
from tests.offchain.storage.fake_kubo import FakeKubo, free_port

REPO = Path(__file__).resolve().parents[3]


def pm(*args: str, store: Path, api: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PM_IPFS_API", "PM_STORE")}
    env.update(PYTHONPATH=str(REPO), PM_STORE=str(store), **({"PM_IPFS_API": api} if api else {}))
    command = [sys.executable, "-m", "offchain.cli", "store", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


def ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def kubo(tmp_path):
    server = FakeKubo(tmp_path / "kubo").start()
    yield server
    server.stop()


@pytest.mark.parametrize("backend", ["embedded", "kubo"])
def test_put_get_export_import_pins(tmp_path, backend, request):
    api = request.getfixturevalue("kubo").url if backend == "kubo" else None
    store = tmp_path / "store"
    data = random.Random(1).randbytes(600_000)
    (tmp_path / "in.bin").write_bytes(data)

    put = ok(pm("put", str(tmp_path / "in.bin"), "--json", store=store, api=api))
    assert put == {"cid": file_cid(data), "size": len(data), "backend": backend, "spooled": False}
    cid = put["cid"]
    assert ok(pm("get", cid, "-o", str(tmp_path / "out.bin"), "--json", store=store, api=api))["size"] == len(
        data
    )
    assert (tmp_path / "out.bin").read_bytes() == data
    assert ok(pm("pins", "--json", store=store, api=api)) == {"pins": [cid]}

    car = tmp_path / "dag.car"
    ok(pm("export", cid, "-o", str(car), "--json", store=store, api=api))
    fresh = tmp_path / "fresh"
    assert ok(pm("import", str(car), "--json", store=fresh)) == {"roots": [cid]}
    assert pm("get", cid, "-o", str(tmp_path / "again.bin"), store=fresh).returncode == 0
    assert (tmp_path / "again.bin").read_bytes() == data


def test_text_output_is_the_cid(tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    result = pm("put", str(tmp_path / "hello.txt"), store=tmp_path / "store")
    assert result.stdout.strip() == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"


def test_unpin_then_gc(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"temporary")
    cid = ok(pm("put", str(tmp_path / "f"), "--json", store=store))["cid"]
    ok(pm("unpin", cid, "--json", store=store))
    assert ok(pm("gc", "--json", store=store))["blocks_removed"] == 1
    assert ok(pm("pins", "--json", store=store)) == {"pins": []}


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_user_errors_are_one_line(tmp_path):
    store = tmp_path / "store"
    one_line_error(pm("put", str(tmp_path / "missing.bin"), store=store), "no such file", "missing.bin")
    one_line_error(pm("get", "not-a-cid", "-o", str(tmp_path / "x"), store=store), "not a CID")
    one_line_error(pm("get", file_cid(b"absent"), "-o", str(tmp_path / "x"), store=store), "not found")
    one_line_error(pm("import", str(tmp_path / "missing.car"), store=store), "no such file")
    (tmp_path / "bad.car").write_bytes(b"\x05hello")
    one_line_error(pm("import", str(tmp_path / "bad.car"), store=store), "CAR")
    down = f"http://127.0.0.1:{free_port()}"
    one_line_error(pm("pins", store=store, api=down), "connection refused", "ipfs daemon")


def test_put_while_daemon_down_is_spooled_then_drained(tmp_path):
    server = FakeKubo(tmp_path / "kubo")
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"spool me")
    put = ok(pm("put", str(tmp_path / "f"), "--json", store=store, api=server.url))
    assert put["spooled"] and put["cid"] == file_cid(b"spool me")
    server.start()
    try:
        assert ok(pm("drain", "--json", store=store, api=server.url)) == {"pushed": 1}
        assert server.store.pins() == [put["cid"]]
    finally:
        server.stop()
