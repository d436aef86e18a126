"""scripts/deploy.py deploys a wired system and writes the deployment document off-chain code reads."""

import json

from brownie import ModelRegistry, ModelShares, RevenueRouter, WorkLedger, chain, web3
from conftest import SPEC_CID, TEST_LEDGER, ZERO_ADDRESS

from scripts import deploy
from scripts.deploy import DEMO_LEDGER, TESTNET_LEDGER


def test_deploy_wires_the_contracts_and_writes_the_document(accounts, tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "DEPLOYMENTS", tmp_path)
    params = deploy.Parameters(accounts[3].address, 300, 700, TEST_LEDGER)
    path = deploy.write(deploy.deploy(accounts[0], params))

    assert path == tmp_path / f"{chain.id}.json"
    document = json.loads(path.read_text())
    assert document["chainId"] == chain.id
    assert document["solcVersion"].startswith("0.8.30")
    assert document["parameters"]["treasury"] == accounts[3].address
    assert document["parameters"]["protocol_fee_bps"] == 300
    assert document["parameters"]["ledger"]["claim_bond"] == TEST_LEDGER.claim_bond
    contracts = document["contracts"]
    assert set(contracts) == {"ModelRegistry", "RevenueRouter", "WorkLedger", "ModelSharesImplementation"}
    for name, entry in contracts.items():
        assert web3.eth.get_code(entry["address"]), name
        assert web3.eth.get_transaction_receipt(entry["transaction"])["blockNumber"] == entry["block"]
        assert (deploy.ROOT / entry["abi"]).is_file()

    registry = ModelRegistry.at(contracts["ModelRegistry"]["address"])
    router = RevenueRouter.at(contracts["RevenueRouter"]["address"])
    ledger = WorkLedger.at(contracts["WorkLedger"]["address"])
    assert registry.sharesImplementation() == contracts["ModelSharesImplementation"]["address"]
    assert registry.workLedger() == ledger
    assert router.registry() == registry
    assert ledger.registry() == registry
    assert (router.treasury(), router.protocolFeeBps(), router.operatorFeeBps()) == (accounts[3], 300, 700)
    assert ledger.treasury() == accounts[3]
    assert tuple(ledger.parameters()) == TEST_LEDGER.as_tuple()

    tx = registry.createModel(SPEC_CID, 2, 10**18, ZERO_ADDRESS, accounts[2], {"from": accounts[1]})
    shares = ModelShares.at(tx.events["ModelCreated"]["shares"])
    assert shares.router() == router
    assert shares.minter() == ledger


def test_demo_and_testnet_defaults_respect_the_contract_bounds(accounts):
    for development in (True, False):
        params = deploy.Parameters.for_network(accounts[0].address, development)
        assert params.protocol_fee_bps + params.operator_fee_bps <= 2_000
        ledger = params.ledger
        assert 1 <= ledger.challenge_window <= 30 * 86400 and 1 <= ledger.vote_window <= 30 * 86400
        assert 1 <= ledger.quorum <= 255 and 0 <= ledger.burn_bps <= 10_000
        assert ledger.claim_bond <= ledger.min_worker_stake  # a member can always afford one claim
        assert 1 <= ledger.max_pending_claims <= 64
        assert ledger.availability_grace < ledger.challenge_window
        assert ledger.validator_delay <= 30 * 86400 and ledger.vote_bond < 2**88
        assert 0 <= ledger.loser_vote_slash_bps <= 10_000 and 0 <= ledger.no_quorum_slash_bps <= 10_000
    demo, testnet = DEMO_LEDGER, TESTNET_LEDGER
    assert demo.validator_delay <= 2  # the demo's validators act within seconds
    # On a public testnet an address registered after a claim can neither challenge it nor vote
    # on its dispute: the delay outlasts both windows.
    assert testnet.validator_delay > testnet.challenge_window + testnet.vote_window
