import itertools

import pytest
from brownie import web3

SPEC_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
PROTOCOL_FEE_BPS = 500
OPERATOR_FEE_BPS = 1000


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    """Every test starts from the same chain state (brownie snapshots and reverts anvil)."""


@pytest.fixture
def deployer(accounts):
    return accounts[0]


@pytest.fixture
def creator(accounts):
    return accounts[1]


@pytest.fixture
def operator(accounts):
    return accounts[2]


@pytest.fixture
def treasury(accounts):
    return accounts[3]


@pytest.fixture
def holders(accounts):
    return accounts[4:9]


@pytest.fixture
def minter(accounts):
    """Stands in for the WorkLedger, the only address allowed to mint shares."""
    return accounts[9]


@pytest.fixture(scope="module")
def system(accounts, ModelRegistry, RevenueRouter, ModelShares):
    """Registry + router + share implementation, wired as scripts/deploy.py wires them."""
    deployer, treasury, minter = accounts[0], accounts[3], accounts[9]
    registry = ModelRegistry.deploy(deployer, {"from": deployer})
    router = RevenueRouter.deploy(
        deployer, registry, treasury, PROTOCOL_FEE_BPS, OPERATOR_FEE_BPS, {"from": deployer}
    )
    implementation = ModelShares.deploy(router, minter, {"from": deployer})
    registry.wire(implementation, minter, {"from": deployer})
    return registry, router, implementation


@pytest.fixture(scope="module")
def registry(system):
    return system[0]


@pytest.fixture(scope="module")
def router(system):
    return system[1]


@pytest.fixture(scope="module")
def token(accounts, MockERC20):
    return MockERC20.deploy("Revenue", "REV", {"from": accounts[0]})


ZERO_ADDRESS = "0x" + "00" * 20
_request_counter = itertools.count()


def create_model(registry, creator, operator, asset=ZERO_ADDRESS, num_stages=2, rate=10**18):
    tx = registry.createModel(SPEC_CID, num_stages, rate, asset, operator, {"from": creator})
    return tx.events["ModelCreated"]["modelId"]


@pytest.fixture(scope="module")
def eth_model(registry, accounts):
    return create_model(registry, accounts[1], accounts[2])


@pytest.fixture(scope="module")
def eth_shares(registry, eth_model, ModelShares):
    return ModelShares.at(registry.getModel(eth_model)["shares"])


@pytest.fixture(scope="module")
def token_model(registry, accounts, token):
    return create_model(registry, accounts[1], accounts[2], asset=token.address)


@pytest.fixture(scope="module")
def token_shares(registry, token_model, ModelShares):
    return ModelShares.at(registry.getModel(token_model)["shares"])


def request_id(label: str) -> str:
    """A bytes32 request id, as a gateway would derive it from a request."""
    return web3.to_hex(web3.keccak(text=label))


def pay_eth(router, model_id, amount, payer, label=None):
    """Pay an ETH model; returns the transaction."""
    rid = request_id(label or f"{model_id}-{amount}-{next(_request_counter)}")
    return router.payForInference(model_id, rid, amount, {"from": payer, "value": amount})


def split(amount):
    """(toHolders, toOperator, toProtocol) for the fixture's fee settings."""
    to_protocol = amount * PROTOCOL_FEE_BPS // 10_000
    to_operator = amount * OPERATOR_FEE_BPS // 10_000
    return amount - to_protocol - to_operator, to_operator, to_protocol


def within_one_wei(actual, exact):
    """Magnified accounting floors each holder's entitlement: it may trail the exact value by < 1 wei."""
    return exact - 1 <= actual <= exact
