"""The compiler, OpenZeppelin remapping and anvil work end to end."""

from urllib.parse import urlparse

from brownie import MockERC20, interface, rpc, web3
from custom_errors import reverts_with


def test_mock_token_deploys_and_transfers_on_anvil(deployer, accounts):
    token = MockERC20.deploy("Revenue", "REV", {"from": deployer})
    token.mint(deployer, 1_000, {"from": deployer})
    token.transfer(accounts[1], 250, {"from": deployer})
    assert token.balanceOf(accounts[1]) == 250
    assert token.totalSupply() == 1_000
    assert "anvil" in web3.client_version.lower()


def test_transfer_beyond_balance_reverts_with_oz_custom_error(deployer, accounts):
    token = MockERC20.deploy("Revenue", "REV", {"from": deployer})
    with reverts_with("ERC20InsufficientBalance", accounts[1].address, 0, 1):
        token.transfer(accounts[2], 1, {"from": accounts[1]})


def test_protocol_surface_interfaces_compile():
    names = {"IModelRegistry", "IModelShares", "IRevenueRouter", "IWorkLedger"}
    assert all(hasattr(interface, name) for name in names)
    ledger_functions = {entry["name"] for entry in interface.IWorkLedger.abi if entry["type"] == "function"}
    assert {"stake", "join", "submitClaim", "challenge", "vote", "resolve", "finalize"} <= ledger_functions


def test_the_chain_is_an_anvil_of_our_own_on_a_free_port():
    """Never whatever listens on 8545 (a demo's chain, another test run): brownie's own child."""
    assert rpc.is_active() and rpc.is_child()
    assert urlparse(web3.provider.endpoint_uri).port != 8545
