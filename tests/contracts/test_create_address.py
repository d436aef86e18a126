"""CreateAddress: the CREATE address formula against an independent RLP encoding, at every nonce
width, and the router's use of it: model m's share token is the registry's m-th creation, and a
registry on a chain where that does not hold (contract nonces from 0, another CREATE derivation
such as zkSync's) creates no model at all rather than one whose payments reach another token."""

import pytest
import rlp
from brownie import CreateAddressHarness, web3
from conftest import create_model
from custom_errors import reverts_with

NONCES = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 2**24, 2**32 - 1, 2**32, 2**56, 2**64 - 1]


def expected(deployer: str, nonce: int) -> str:
    digest = web3.keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))
    return web3.to_checksum_address(digest[12:])


@pytest.fixture(scope="module")
def harness(accounts):
    return CreateAddressHarness.deploy({"from": accounts[0]})


@pytest.mark.parametrize("nonce", NONCES)
def test_matches_the_rlp_formula(harness, accounts, nonce):
    deployer = accounts[3].address
    assert harness.compute(deployer, nonce) == expected(deployer, nonce)


def test_the_registry_creates_model_m_at_nonce_m(harness, registry, accounts):
    ids = [create_model(registry, accounts[1], accounts[2]) for _ in range(3)]
    for model_id in ids:
        assert harness.compute(registry, model_id) == registry.getModel(model_id)["shares"]


def test_a_registry_whose_nonce_is_not_the_model_id_creates_no_model(registry, accounts):
    """anvil_setNonce plays a chain whose contract nonces start at 0: model m's clone would land at
    nonce m - 1, where the router looks for model m - 1's token, so model m - 1's payments would be
    credited to model m's holders. createModel refuses with both addresses; nothing is created."""
    assert registry.modelCount() == 0
    assert web3.eth.get_transaction_count(registry.address) == 1  # EIP-161: contracts start at 1
    web3.provider.make_request("anvil_setNonce", [registry.address, "0x0"])
    with reverts_with("SharesAddressMismatch", expected(registry.address, 1), expected(registry.address, 0)):
        create_model(registry, accounts[1], accounts[2])
    assert registry.modelCount() == 0
