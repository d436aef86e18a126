"""`pm balance`, `pm claim` and `pm status`: shares earned through the WorkLedger, revenue paid
through the router, claimed by each holder exactly pro rata (within 1 wei per claim)."""

import json
import os
import subprocess
import sys

import pytest
from chain_testkit import REPO, anvil_account, earn_shares, earned_checkpoint

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.storage.cids import bytes32_to_cid
from offchain.storage.embedded import EmbeddedStore

ETHER = 10**18
PRICE = ETHER // 100


def pm(*args, key, env):
    env = {**env, "PM_PRIVATE_KEY": key.key.hex()}
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def network(chain, tmp_path):
    """Model 1 with two holders: worker A earned 3 work units on stage 0, worker B 1 unit on stage 1."""
    url, deployments = chain
    creator, worker_a, worker_b = (ChainClient(url, anvil_account(i)) for i in (1, 2, 3))
    protocol = Protocol.load(creator, deployments)
    create_model(
        protocol,
        EmbeddedStore(tmp_path / "store"),
        REPO / "specs" / "tiny.json",
        shares_per_work_unit=ETHER,
        revenue_asset="eth",
        operator=None,
    )
    earn_shares(protocol, worker_a, 1, 0, 3)
    earn_shares(protocol, worker_b, 1, 1, 1)
    env = {**os.environ, "PM_RPC_URL": url, "PM_DEPLOYMENTS": str(deployments)}
    return protocol, env


def pay(protocol, payer_index: int, request: int, amount: int = PRICE) -> None:
    payer = ChainClient(protocol.client.rpc_url, anvil_account(payer_index))
    router = payer.contract("RevenueRouter", protocol.router.address)
    payer.transact(router.functions.payForInference(1, request.to_bytes(32, "big"), amount), value=amount)


def to_holders(amount: int, protocol) -> int:
    fees = (
        protocol.router.functions.protocolFeeBps().call() + protocol.router.functions.operatorFeeBps().call()
    )
    return amount - amount * fees // 10_000


def test_balance_shows_shares_supply_and_claimable(network):
    protocol, env = network
    for request in range(4):
        pay(protocol, 5, request)
    result = pm("balance", "--model", "1", "--json", key=anvil_account(2), env=env)
    assert result.returncode == 0, result.stderr
    held = json.loads(result.stdout)
    assert int(held["shares"]) == 3 * ETHER and int(held["supply"]) == 4 * ETHER
    assert held["percent_of_supply"] == 75.0
    expected = 4 * to_holders(PRICE, protocol) * 3 // 4
    assert expected - 1 <= int(held["claimable_wei"]) <= expected
    assert held["claimed_wei"] == "0"


def test_each_holder_claims_its_pro_rata_share_and_a_sale_splits_the_rest(network):
    protocol, env = network
    w3 = protocol.client.w3
    worker_a, worker_b, buyer = anvil_account(2), anvil_account(3), anvil_account(4)
    for request in range(3):
        pay(protocol, 5, request)
    # A sells half its shares to the buyer, then more requests are paid.
    seller = ChainClient(protocol.client.rpc_url, worker_a)
    shares = seller.contract("ModelShares", protocol.model(1).shares)
    seller.transact(shares.functions.transfer(buyer.address, 3 * ETHER // 2))
    for request in range(3, 5):
        pay(protocol, 5, request)

    first, second = 3 * to_holders(PRICE, protocol), 2 * to_holders(PRICE, protocol)
    expected = {
        worker_a.address: first * 3 // 4 + second * 3 // 8,
        worker_b.address: first // 4 + second // 4,
        buyer.address: second * 3 // 8,
    }
    for account in (worker_a, worker_b, buyer):
        before = w3.eth.get_balance(account.address)
        result = pm("claim", "--model", "1", "--json", key=account, env=env)
        assert result.returncode == 0, result.stderr
        (claimed,) = json.loads(result.stdout)["claims"]
        receipt = w3.eth.get_transaction_receipt(claimed["tx"])
        received = (
            w3.eth.get_balance(account.address) - before + receipt["gasUsed"] * receipt["effectiveGasPrice"]
        )
        assert received == int(claimed["amount_wei"])
        assert expected[account.address] - 2 <= received <= expected[account.address]
    paid_to_holders = 5 * to_holders(PRICE, protocol)
    total_claimed = protocol.shares(protocol.model(1)).functions.totalClaimed().call()
    assert paid_to_holders - 3 <= total_claimed <= paid_to_holders


def test_dry_run_sends_nothing_and_claimed_so_far_accumulates(network):
    protocol, env = network
    pay(protocol, 5, 1)
    worker_b = anvil_account(3)
    nonce = protocol.client.w3.eth.get_transaction_count(worker_b.address)
    dry = pm("claim", "--all-models", "--dry-run", "--json", key=worker_b, env=env)
    assert dry.returncode == 0, dry.stderr
    assert [claim["tx"] for claim in json.loads(dry.stdout)["claims"]] == [None]
    assert protocol.client.w3.eth.get_transaction_count(worker_b.address) == nonce

    assert pm("claim", "--all-models", key=worker_b, env=env).returncode == 0
    pay(protocol, 5, 2)
    assert pm("claim", "--model", "1", key=worker_b, env=env).returncode == 0
    held = json.loads(pm("balance", "--model", "1", "--json", key=worker_b, env=env).stdout)
    expected = 2 * to_holders(PRICE, protocol) // 4
    assert expected - 2 <= int(held["claimed_wei"]) <= expected
    assert held["claimable_wei"] == "0"


def test_claim_needs_exactly_one_target(network):
    _, env = network
    result = pm("claim", key=anvil_account(2), env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == "pass exactly one of --model ID and --all-models"


def test_status_reports_members_rounds_claims_and_revenue(network):
    protocol, env = network
    pay(protocol, 5, 1)
    result = pm("status", "--model", "1", "--json", key=anvil_account(2), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    stages = report["stages"]
    worker_a, worker_b = anvil_account(2).address, anvil_account(3).address
    assert [stage["members"] for stage in stages] == [[worker_a], [worker_b], []]
    assert [stage["round"] for stage in stages] == [1, 1, 0]
    earned = [bytes32_to_cid(earned_checkpoint(stage)) for stage in (0, 1)]
    assert [stage["checkpoint_cid"] for stage in stages] == [*earned, None]
    claims = report["claims"]
    assert (claims["pending"], claims["finalized"], claims["rejected"], claims["challenged"]) == (0, 2, 0, 0)
    assert sorted(int(claim["shares_minted"]) for claim in claims["list"]) == [ETHER, 3 * ETHER]
    assert int(report["shares"]["supply"]) == 4 * ETHER
    assert int(report["revenue"]["total_wei"]) == to_holders(PRICE, protocol)
    text = pm("status", "--model", "1", key=anvil_account(2), env=env)
    assert text.returncode == 0 and "0 pending, 2 finalized, 0 rejected" in text.stdout
