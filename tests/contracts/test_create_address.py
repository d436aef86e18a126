"""CreateAddress: the CREATE address formula against an independent RLP encoding, at every nonce
width, and the router's use of it: model m's share token is the registry's m-th creation."""

import pytest
import rlp
from brownie import CreateAddressHarness, web3
from conftest import create_model

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
