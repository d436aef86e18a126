import itertools
from dataclasses import dataclass

import pytest
from brownie import web3

from offchain.demo.anvil import free_port
from scripts import deploy

SPEC_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
PROTOCOL_FEE_BPS = 500
OPERATOR_FEE_BPS = 1000


def pytest_configure(config):
    """Launch the test chain on a free port: brownie would otherwise attach to whatever already
    listens on 8545 (a demo's anvil, another engineer's test run) and test against its state.
    An explicit `--network` other than development is left alone. (CONFIG is imported here:
    brownie hashes the sources of a conftest's top-level imports, and _config is compiled.)"""
    from brownie._config import CONFIG

    if config.getoption("network") in (False, ["development"]):
        CONFIG.networks["development"]["cmd_settings"]["port"] = free_port()


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


# ------------------------------------------------------------------ the full protocol (WorkLedger)

ETHER = 10**18
TEST_LEDGER = deploy.LedgerParameters(
    challenge_window=100,
    claim_bond=ETHER,
    max_work_units_per_claim=1_000,
    quorum=2,
    burn_bps=2_000,
    vote_window=100,
    unbonding_period=200,
    min_worker_stake=2 * ETHER,
    min_validator_stake=2 * ETHER,
)


@dataclass
class Protocol:
    registry: object
    router: object
    ledger: object


@pytest.fixture(scope="module")
def protocol(accounts, ModelRegistry, RevenueRouter, WorkLedger):
    """The system exactly as scripts/deploy.py deploys it, with short test windows."""
    params = deploy.Parameters(accounts[3].address, PROTOCOL_FEE_BPS, OPERATOR_FEE_BPS, TEST_LEDGER)
    contracts = deploy.deploy(accounts[0], params)["contracts"]
    return Protocol(
        registry=ModelRegistry.at(contracts["ModelRegistry"]["address"]),
        router=RevenueRouter.at(contracts["RevenueRouter"]["address"]),
        ledger=WorkLedger.at(contracts["WorkLedger"]["address"]),
    )


@pytest.fixture(scope="module")
def ledger(protocol):
    return protocol.ledger


@pytest.fixture(scope="module")
def workers(accounts):
    return accounts[4:7]


@pytest.fixture(scope="module")
def validators(accounts):
    return accounts[7:10]


@pytest.fixture(scope="module")
def model(protocol, accounts):
    """A 2-stage ETH model; 3 shares (1e18 units each) per work unit."""
    return create_model(protocol.registry, accounts[1], accounts[2], num_stages=2, rate=3 * ETHER)


@pytest.fixture(scope="module")
def staked(ledger, workers, validators):
    """Workers and validators staked (5 ETH each) and validators registered."""
    for account in [*workers, *validators]:
        ledger.stake({"from": account, "value": 5 * ETHER})
    for validator in validators:
        ledger.registerValidator({"from": validator})


def claim_input(model_id, stage, round_, parent="", cid=None, work_units=10):
    """A ClaimInput tuple in the struct's field order."""
    cid = cid or f"QmCheckpoint{model_id}s{stage}r{round_}"
    digest = web3.to_hex(web3.keccak(text=f"state-{cid}"))
    trace_root = web3.to_hex(web3.keccak(text=f"trace-{cid}"))
    return (model_id, stage, round_, parent, cid, digest, trace_root, f"QmTrace{cid}", work_units)
