"""scripts/deploy.py deploys a wired system and writes the deployment document off-chain code reads."""

import json

from brownie import ModelRegistry, ModelShares, RevenueRouter, chain, web3
from conftest import SPEC_CID, ZERO_ADDRESS

from scripts import deploy


def test_deploy_wires_the_contracts_and_writes_the_document(accounts, tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "DEPLOYMENTS", tmp_path)
    params = deploy.Parameters(treasury=accounts[3].address, protocol_fee_bps=300, operator_fee_bps=700)
    path = deploy.write(deploy.deploy(accounts[0], params))

    assert path == tmp_path / f"{chain.id}.json"
    document = json.loads(path.read_text())
    assert document["chainId"] == chain.id
    assert document["solcVersion"].startswith("0.8.30")
    assert document["parameters"] == {
        "treasury": accounts[3].address,
        "protocol_fee_bps": 300,
        "operator_fee_bps": 700,
    }
    contracts = document["contracts"]
    for name, entry in contracts.items():
        assert web3.eth.get_code(entry["address"]), name
        assert web3.eth.get_transaction_receipt(entry["transaction"])["blockNumber"] == entry["block"]
        assert (deploy.ROOT / entry["abi"]).is_file()

    registry = ModelRegistry.at(contracts["ModelRegistry"]["address"])
    router = RevenueRouter.at(contracts["RevenueRouter"]["address"])
    assert registry.sharesImplementation() == contracts["ModelSharesImplementation"]["address"]
    assert router.registry() == registry
    assert (router.treasury(), router.protocolFeeBps(), router.operatorFeeBps()) == (accounts[3], 300, 700)

    tx = registry.createModel(SPEC_CID, 2, 10**18, ZERO_ADDRESS, accounts[2], {"from": accounts[1]})
    shares = ModelShares.at(tx.events["ModelCreated"]["shares"])
    assert shares.router() == router
    assert shares.minter() == registry.workLedger()
