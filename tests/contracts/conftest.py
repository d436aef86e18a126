import itertools
from dataclasses import dataclass

import pytest
from brownie import chain, web3

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
    max_pending_claims=64,
    availability_grace=20,
    validator_delay=10,
    vote_bond=ETHER // 10,
    loser_vote_slash_bps=5_000,
    no_quorum_slash_bps=1_000,
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
    """Workers and validators staked (5 ETH each); nobody holds a stage yet."""
    for account in [*workers, *validators]:
        ledger.stake({"from": account, "value": 5 * ETHER})


@pytest.fixture(scope="module")
def stage_validators(ledger, model, staked, validators):
    """Every validator registered for stage 0 of `model`, past validatorDelay."""
    register_validators(ledger, model, 0, validators)


def register_validators(ledger, model_id, stage, validators):
    """Register `validators` for (model, stage) and wait until they may challenge and vote."""
    for validator in validators:
        ledger.registerValidator(model_id, stage, {"from": validator})
    chain.sleep(TEST_LEDGER.validator_delay)
    chain.mine()


ZERO32 = "0x" + "00" * 32


def cid32(label: str) -> str:
    """A bytes32 standing for the sha256 digest inside a CIDv0 (any 32 bytes will do on-chain)."""
    return web3.to_hex(web3.keccak(text=label))


def claim_input(model_id, stage, first, last=None, parent=ZERO32, cid=None, work_units=10):
    """A ClaimInput tuple in the struct's field order: rounds first..last (default: one round)."""
    last = first if last is None else last
    cid = cid or cid32(f"checkpoint-{model_id}-{stage}-{first}-{last}")
    return (
        model_id,
        stage,
        first,
        last,
        parent,
        cid,
        cid32(f"state-{cid}"),
        cid32(f"rounds-{cid}"),
        cid32(f"manifest-{cid}"),
        work_units,
    )


def submit(ledger, worker, *args, **kwargs):
    """Submit a claim (claim_input's arguments); returns its claim id."""
    tx = ledger.submitClaim(claim_input(*args, **kwargs), {"from": worker})
    return tx.events["ClaimSubmitted"]["claimId"]


def submit_chain(ledger, worker, model_id, stage, count, first=1, parent=ZERO32, rounds=1):
    """`count` claims of `rounds` rounds each, each chained on the one before; returns their ids."""
    ids = []
    for i in range(count):
        start = first + i * rounds
        inp = claim_input(model_id, stage, start, start + rounds - 1, parent=parent)
        ids.append(ledger.submitClaim(inp, {"from": worker}).events["ClaimSubmitted"]["claimId"])
        parent = inp[5]
    return ids


def stakes(ledger, account):
    """(staked, locked) of an account."""
    staked, locked, *_ = ledger.stakeOf(account)
    return staked, locked


def next_block_at(timestamp: int) -> None:
    """Mine the next transaction's block at exactly `timestamp` (for deadline edges)."""
    web3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
