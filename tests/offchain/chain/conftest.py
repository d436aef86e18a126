"""Fixtures: real anvil processes, the compiled contracts, a deployed protocol, a funded client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chain_testkit import anvil_account, brownie, deploy, deploy_protocol, start_anvil, stop

from offchain.chain.client import ChainClient
from offchain.paths import BUILD_DIR


@pytest.fixture(scope="session")
def compiled() -> Path:
    """brownie's build artifacts, brought up to date once per session."""
    brownie("compile")
    return BUILD_DIR


@pytest.fixture
def anvil() -> Iterator[str]:
    process, url = start_anvil()
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture
def client(anvil, compiled) -> ChainClient:
    return ChainClient(anvil, anvil_account(0))


@pytest.fixture
def token(client):
    contract = deploy(client, "MockERC20", "Revenue", "REV")
    client.transact(contract.functions.mint(client.address, 10**24))
    return contract


@pytest.fixture(scope="module")
def deployed(request, compiled, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """One anvil per test module, protocol deployed by scripts/deploy.py: (rpc_url, deployments dir).
    A module's ANVIL_ARGS go to anvil (e.g. `--block-time 1`: chain time that moves on its own)."""
    process, url = start_anvil(*getattr(request.module, "ANVIL_ARGS", ()))
    deployments = tmp_path_factory.mktemp("deployments")
    try:
        deploy_protocol(url, deployments, anvil_account(0))
        yield url, deployments
    finally:
        stop(process)


@pytest.fixture
def chain(deployed) -> Iterator[tuple[str, Path]]:
    """The deployed chain, reverted to its freshly deployed state after each test."""
    url, deployments = deployed
    probe = ChainClient(url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield url, deployments
    finally:
        probe.w3.provider.make_request("evm_revert", [snapshot])
