"""Every deployed contract fits the EIP-170 code size limit, or no chain would accept it."""

from brownie import web3

EIP170_LIMIT = 24_576


def test_every_deployed_contract_is_under_the_eip170_limit(protocol, model):
    shares = protocol.registry.getModel(model)["shares"]
    implementation = protocol.registry.sharesImplementation()
    deployed = [protocol.registry, protocol.router, protocol.ledger, implementation, shares]
    sizes = {str(contract): len(web3.eth.get_code(str(contract))) for contract in deployed}
    assert all(0 < size <= EIP170_LIMIT for size in sizes.values()), sizes
    assert sizes[str(protocol.ledger)] > 10_000  # the ledger itself, not a proxy or an empty account
