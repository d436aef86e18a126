"""The public-testnet path, end to end, against a chain that looks like Sepolia.

anvil runs as a separate process with Sepolia's chain id and a block every second (no
instant mining, so every transaction really waits for its blocks). The protocol is deployed the
way docs/roles/deployer.md tells a user to deploy on Sepolia: the chain added as a brownie live network,
`brownie run scripts/deploy.py --network ...` with the deployer's key in PRIVATE_KEY; then `pm`
talks to it with --rpc-url. The keys are fresh ones funded by the test, never anvil's unlocked
accounts, so nothing here can pass through a development-only shortcut.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from eth_account import Account

from offchain.chain.client import ChainClient
from offchain.demo.anvil import Anvil, rpc, start_anvil
from offchain.demo.deploy import deploy_protocol
from offchain.paths import REPO

SEPOLIA = 11155111
ETHER = 10**18
DAY = 86400
# The "recommended public-testnet default" column of docs/protocol.md, in IWorkLedger.Parameters order.
TESTNET_LEDGER = {
    "challenge_window": DAY,
    "claim_bond": ETHER // 20,
    "max_work_units_per_claim": 10_000,
    "quorum": 3,
    "burn_bps": 2_000,
    "vote_window": DAY,
    "unbonding_period": 7 * DAY,
    "min_worker_stake": ETHER // 10,
    "min_validator_stake": ETHER // 2,
    "max_pending_claims": 64,
    "availability_grace": 6 * 3600,
    "validator_delay": 3 * DAY,
    "vote_bond": ETHER // 100,
    "loser_vote_slash_bps": 5_000,
    "no_quorum_slash_bps": 2_000,
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sepolia() -> Iterator[Anvil]:
    with start_anvil("--silent", "--chain-id", str(SEPOLIA), "--block-time", "1") as anvil:
        yield anvil


def funded(anvil: Anvil, ether: int):
    account = Account.create()
    rpc(anvil.url, "anvil_setBalance", [account.address, hex(ether * ETHER)])
    return account


def pm(*args: str, key: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args, "--json"],
        cwd=REPO,
        env={**env, "PM_PRIVATE_KEY": key},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_deploy_on_a_live_network_then_pm_with_rpc_url(sepolia, tmp_path, monkeypatch):
    deployer = funded(sepolia, 10)
    monkeypatch.delenv("PM_TREASURY", raising=False)
    monkeypatch.delenv("PM_CONFIRMATIONS", raising=False)
    deployment = deploy_protocol(sepolia.url, tmp_path / "deployments", deployer)

    document = deployment.document
    assert deployment.path == tmp_path / "deployments" / f"{SEPOLIA}.json"
    assert document["chainId"] == SEPOLIA
    assert document["deployer"] == deployer.address
    # Live parameters: the public-testnet column of docs/protocol.md, not the demo's short windows.
    assert document["parameters"]["ledger"] == TESTNET_LEDGER
    assert (document["parameters"]["protocol_fee_bps"], document["parameters"]["treasury"]) == (
        300,
        deployer.address,
    )
    assert document["confirmations"] == 2
    # brownie's live path waited for 2 confirmations of each transaction before sending the next:
    # each one is mined at least 2 blocks after the one before it.
    output = re.sub(r"\x1b\[[0-9;]*m", "", deployment.output)
    assert output.count("Required confirmations: 2/2") == 5
    blocks = [entry["block"] for entry in document["contracts"].values()]
    assert all(later - earlier >= 2 for earlier, later in itertools.pairwise(blocks)), blocks
    client = ChainClient(sepolia.url)
    contracts = document["contracts"]
    for name, entry in contracts.items():
        receipt = client.w3.eth.get_transaction_receipt(entry["transaction"])
        assert receipt["status"] == 1 and receipt["blockNumber"] == entry["block"], name
        assert receipt["from"] == deployer.address, name
        assert client.w3.eth.get_code(entry["address"]), name
    ledger = client.contract("WorkLedger", contracts["WorkLedger"]["address"])
    assert tuple(ledger.functions.parameters().call()) == tuple(TESTNET_LEDGER.values())
    router = client.contract("RevenueRouter", contracts["RevenueRouter"]["address"])
    assert router.functions.protocolFeeBps().call() == 300

    env = {
        **os.environ,
        "PM_DEPLOYMENTS": str(tmp_path / "deployments"),
        "PM_STORE": str(tmp_path / "store"),
    }
    env.pop("PM_RPC_URL", None)
    creator = funded(sepolia, 1)
    rpc_url = ["--rpc-url", sepolia.url]
    created = pm(
        "model",
        "create",
        "--spec",
        str(REPO / "specs" / "tiny.json"),
        *rpc_url,
        key=creator.key.hex(),
        env=env,
    )
    assert created["model_id"] == 1 and created["creator"] == creator.address and created["num_stages"] == 3

    status = pm("status", "--model", "1", *rpc_url, key=creator.key.hex(), env=env)
    assert status["model"]["spec_cid"] == created["spec_cid"]
    assert [stage["members"] for stage in status["stages"]] == [[], [], []]
    assert int(status["shares"]["supply"]) == 0

    balance = pm("balance", "--model", "1", *rpc_url, key=creator.key.hex(), env=env)
    assert balance["holder"] == creator.address and balance["asset_symbol"] == "ETH"
    assert (balance["shares"], balance["supply"], balance["claimable_wei"]) == ("0", "0", "0")
