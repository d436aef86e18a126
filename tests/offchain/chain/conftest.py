"""Fixtures: a real anvil per test, the compiled contracts, a funded client and a token."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from chain_testkit import REPO, anvil_account, deploy, free_port, wait_for_rpc

from offchain.chain.artifacts import BUILD_DIR
from offchain.chain.client import ChainClient


@pytest.fixture(scope="session")
def compiled() -> Path:
    """brownie's build artifacts (compiled once if missing)."""
    if not (BUILD_DIR / "contracts" / "MockERC20.json").is_file():
        subprocess.run(
            [shutil.which("brownie") or "brownie", "compile"], cwd=REPO, check=True, capture_output=True
        )
    return BUILD_DIR


@pytest.fixture
def anvil() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [shutil.which("anvil") or str(REPO / ".venv" / "bin" / "anvil"), "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def client(anvil, compiled) -> ChainClient:
    return ChainClient(anvil, anvil_account(0))


@pytest.fixture
def token(client):
    contract = deploy(client, "MockERC20", "Revenue", "REV")
    client.transact(contract.functions.mint(client.address, 10**24))
    return contract
