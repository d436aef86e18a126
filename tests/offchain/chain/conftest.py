"""Fixtures: real anvil processes, the compiled contracts, a deployed protocol, a funded client."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session")
def shared_deployment(compiled, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """One anvil for the session with the protocol deployed by scripts/deploy.py (a deploy is a
    brownie process: seconds each); modules without ANVIL_ARGS take turns on it."""
    with deployed_anvil(tmp_path_factory) as chain:
        yield chain


@pytest.fixture(scope="module")
def deployed(request, compiled, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The protocol deployed by scripts/deploy.py on anvil, as each module found it fresh: (rpc_url,
    deployments dir). The session's chain, reverted to its freshly deployed state after the module;
    a module with ANVIL_ARGS (e.g. `--block-time 1`: chain time that moves on its own) gets an anvil
    of its own."""
    anvil_args = getattr(request.module, "ANVIL_ARGS", ())
    if not anvil_args:
        url, deployments = request.getfixturevalue("shared_deployment")
        with reverted_after(url):
            yield url, deployments
        return
    with deployed_anvil(tmp_path_factory, *anvil_args) as chain:
        yield chain


@contextlib.contextmanager
def deployed_anvil(tmp_path_factory, *anvil_args: str) -> Iterator[tuple[str, Path]]:
    """A fresh anvil with the protocol deployed by scripts/deploy.py: (rpc_url, deployments dir)."""
    process, url = start_anvil(*anvil_args)
    deployments = tmp_path_factory.mktemp("deployments")
    try:
        deploy_protocol(url, deployments, anvil_account(0))
        yield url, deployments
    finally:
        stop(process)


@contextlib.contextmanager
def reverted_after(url: str) -> Iterator[None]:
    """Everything the block does to the chain at `url` is undone when it ends."""
    probe = ChainClient(url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield
    finally:
        probe.w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture
def chain(deployed) -> Iterator[tuple[str, Path]]:
    """The deployed chain, reverted to its freshly deployed state after each test."""
    url, _ = deployed
    with reverted_after(url):
        yield deployed
