"""ModelRegistry: creating models as share-token clones, status, checkpoints, wiring."""

import brownie
from brownie import ModelRegistry, ModelShares, web3
from conftest import SPEC_CID, ZERO_ADDRESS, create_model
from custom_errors import reverts_with


def test_create_model_deploys_a_clone_with_the_models_parameters(registry, router, creator, operator, token):
    count_before = registry.modelCount()
    tx = registry.createModel(SPEC_CID, 3, 5 * 10**18, token, operator, {"from": creator})
    model_id = count_before + 1
    event = tx.events["ModelCreated"]
    assert (event["modelId"], event["creator"], event["numStages"], event["specCID"]) == (
        model_id,
        creator,
        3,
        SPEC_CID,
    )
    model = registry.getModel(model_id)
    assert model["creator"] == creator
    assert model["shares"] == event["shares"]
    assert model["numStages"] == 3
    assert model["status"] == 0
    assert model["specCID"] == SPEC_CID
    assert model["revenueAsset"] == token
    assert model["operator"] == operator
    assert model["sharesPerWorkUnit"] == 5 * 10**18
    assert registry.modelCount() == model_id
    shares_address, num_stages, status = registry.sharesOf(model_id)
    assert (shares_address, num_stages, status) == (event["shares"], 3, 0)
    assert tuple(registry.workTermsOf(model_id)) == (event["shares"], 5 * 10**18)

    shares = ModelShares.at(event["shares"])
    code = web3.eth.get_code(shares.address)
    implementation = registry.sharesImplementation()
    # EIP-1167 minimal proxy (45 bytes) pointing at the implementation, then the immutable args.
    assert len(code) == 45 + 64
    assert code[10:30] == bytes.fromhex(implementation[2:])
    assert shares.modelId() == model_id
    assert shares.revenueAsset() == token
    assert shares.name() == f"Protocol Model {model_id} Shares"
    assert shares.symbol() == f"PM{model_id}"
    assert shares.decimals() == 18
    assert shares.totalSupply() == 0
    assert shares.router() == router
    assert shares.minter() == registry.workLedger()


def test_each_model_gets_its_own_token(registry, creator, operator):
    first = create_model(registry, creator, operator)
    second = create_model(registry, creator, operator)
    assert second == first + 1
    assert registry.getModel(first)["shares"] != registry.getModel(second)["shares"]


def test_create_model_rejects_bad_parameters(registry, creator, operator, accounts):
    with reverts_with("EmptySpecCID"):
        registry.createModel("", 2, 1, ZERO_ADDRESS, operator, {"from": creator})
    with reverts_with("InvalidStageCount", 0):
        registry.createModel(SPEC_CID, 0, 1, ZERO_ADDRESS, operator, {"from": creator})
    with reverts_with("InvalidStageCount", 65):
        registry.createModel(SPEC_CID, 65, 1, ZERO_ADDRESS, operator, {"from": creator})
    with reverts_with("InvalidSharesPerWorkUnit", 0):
        registry.createModel(SPEC_CID, 2, 0, ZERO_ADDRESS, operator, {"from": creator})
    with reverts_with("InvalidSharesPerWorkUnit", 2**96):
        registry.createModel(SPEC_CID, 2, 2**96, ZERO_ADDRESS, operator, {"from": creator})
    with reverts_with("InvalidRevenueAsset", accounts[7].address):
        registry.createModel(SPEC_CID, 2, 1, accounts[7], operator, {"from": creator})
    with reverts_with("ZeroAddress"):
        registry.createModel(SPEC_CID, 2, 1, ZERO_ADDRESS, ZERO_ADDRESS, {"from": creator})


def test_unknown_model_reverts(registry):
    missing = registry.modelCount() + 1
    with reverts_with("UnknownModel", missing):
        registry.getModel(missing)
    with reverts_with("UnknownModel", missing):
        registry.sharesOf(missing)
    with reverts_with("UnknownModel", missing):
        registry.checkpointOf(missing, 0)


def test_only_the_creator_sets_status(registry, eth_model, creator, accounts):
    with reverts_with("NotModelCreator", eth_model, accounts[5].address):
        registry.setStatus(eth_model, 1, {"from": accounts[5]})
    tx = registry.setStatus(eth_model, 1, {"from": creator})
    assert tx.events["ModelStatusChanged"] == {"modelId": eth_model, "status": 1}
    assert registry.getModel(eth_model)["status"] == 1
    registry.setStatus(eth_model, 2, {"from": creator})
    assert registry.sharesOf(eth_model)[2] == 2


def test_checkpoints_are_written_only_by_the_ledger_and_only_forward(registry, eth_model, minter, accounts):
    ledger = minter  # the registry trusts the address wired as WorkLedger
    zero = "0x" + "00" * 32
    cid, old_cid, digest = "0x" + "11" * 32, "0x" + "22" * 32, "0x" + "ab" * 32
    assert list(registry.checkpointOf(eth_model, 1)) == [zero, zero, 0]
    with reverts_with("NotWorkLedger", accounts[5].address):
        registry.recordCheckpoint(eth_model, 1, 1, cid, digest, {"from": accounts[5]})
    with reverts_with("StageOutOfRange", eth_model, 2):
        registry.recordCheckpoint(eth_model, 2, 1, cid, digest, {"from": ledger})

    tx = registry.recordCheckpoint(eth_model, 1, 4, cid, digest, {"from": ledger})
    assert tx.events["CheckpointAccepted"] == {"modelId": eth_model, "stage": 1, "round": 4, "cid": cid}
    tx = registry.recordCheckpoint(eth_model, 1, 3, old_cid, "0x" + "cd" * 32, {"from": ledger})
    assert "CheckpointAccepted" not in tx.events
    assert list(registry.checkpointOf(eth_model, 1)) == [cid, digest, 4]
    assert list(registry.checkpointOf(eth_model, 0)) == [zero, zero, 0]
    with reverts_with("StageOutOfRange", eth_model, 2):
        registry.checkpointOf(eth_model, 2)


def test_wiring_happens_once_and_only_by_the_owner(deployer, accounts, router):
    registry = ModelRegistry.deploy(deployer, {"from": deployer})
    with reverts_with("NotWired"):
        registry.createModel(SPEC_CID, 2, 1, ZERO_ADDRESS, accounts[2], {"from": accounts[1]})
    implementation = ModelShares.deploy(router, accounts[9], {"from": deployer})
    with reverts_with("OwnableUnauthorizedAccount", accounts[1].address):
        registry.wire(implementation, accounts[9], {"from": accounts[1]})
    with reverts_with("ZeroAddress"):
        registry.wire(implementation, ZERO_ADDRESS, {"from": deployer})
    tx = registry.wire(implementation, accounts[9], {"from": deployer})
    assert tx.events["Wired"] == {"sharesImplementation": implementation, "workLedger": accounts[9]}
    with reverts_with("AlreadyWired"):
        registry.wire(implementation, accounts[9], {"from": deployer})


def test_share_implementation_rejects_zero_wiring(deployer, router):
    with brownie.reverts():
        ModelShares.deploy(router, ZERO_ADDRESS, {"from": deployer})
