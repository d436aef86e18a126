"""WorkLedger validators: bound to one stage per model across both roles, eligible only after
validatorDelay, needing minValidatorStake."""

from brownie import chain
from conftest import ETHER, TEST_LEDGER, create_model, stakes, submit
from custom_errors import reverts_with

KEY = b"\x07" * 32


def test_a_validator_registers_for_one_stage_and_is_eligible_after_the_delay(
    ledger, model, staked, validators
):
    v, w = validators[0], validators[1]
    tx = ledger.registerValidator(model, 1, {"from": v})
    eligible_at = tx.timestamp + TEST_LEDGER.validator_delay
    assert tx.events["ValidatorRegistered"] == {
        "modelId": model,
        "stage": 1,
        "account": v,
        "eligibleAt": eligible_at,
    }
    assert tuple(ledger.validatorOf(model, v)) == (True, 1, eligible_at)
    ledger.registerValidator(model, 1, {"from": w})
    assert ledger.validatorsOf(model, 1) == [v, w]
    assert ledger.validatorsOf(model, 0) == []
    with reverts_with("AlreadyValidator", model, v.address, 1):
        ledger.registerValidator(model, 1, {"from": v})
    with reverts_with("AlreadyValidator", model, v.address, 1):
        ledger.registerValidator(model, 0, {"from": v})

    tx = ledger.leaveValidator(model, {"from": v})
    assert tx.events["ValidatorLeft"] == {"modelId": model, "stage": 1, "account": v}
    assert ledger.validatorsOf(model, 1) == [w]
    assert ledger.validatorOf(model, v)[0] is False
    with reverts_with("NotStageValidator", model, 1, v.address):
        ledger.leaveValidator(model, {"from": v})
    ledger.registerValidator(model, 1, {"from": v})  # back to its stage (the only one it may take)
    assert ledger.validatorsOf(model, 1) == [w, v]


def test_one_stage_per_model_across_both_roles(ledger, protocol, model, staked, workers, accounts):
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.registerValidator(model, 1, {"from": a})
    ledger.registerValidator(model, 0, {"from": a})  # a worker may validate its own stage
    ledger.leave(model, {"from": a})
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.join(model, 1, b"peer", KEY, {"from": a})  # still validates stage 0
    other = create_model(protocol.registry, accounts[1], accounts[2])
    ledger.registerValidator(other, 1, {"from": a})  # a stage of another model is fine
    assert tuple(ledger.validatorOf(other, a))[:2] == (True, 1)


def test_a_lane_with_open_claims_binds_its_stage(ledger, model, staked, workers):
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    submit(ledger, a, model, 0, 1)
    ledger.leave(model, {"from": a})
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.registerValidator(model, 1, {"from": a})


def test_registration_checks_stake_and_stage(ledger, protocol, model, accounts):
    v = accounts[1]
    with reverts_with("InsufficientStake", v.address, 2 * ETHER, 0):
        ledger.registerValidator(model, 0, {"from": v})
    ledger.stake({"from": v, "value": 2 * ETHER})
    with reverts_with("StageOutOfRange", model, 2):
        ledger.registerValidator(model, 2, {"from": v})
    missing = protocol.registry.modelCount() + 1
    with reverts_with("UnknownModel", missing):
        ledger.registerValidator(missing, 0, {"from": v})
    ledger.registerValidator(model, 0, {"from": v})
    assert ledger.stakeOf(v)["locked"] == 0  # registering locks nothing; acting needs the minimum


def test_only_eligible_validators_of_the_claim_stage_challenge(ledger, model, staked, workers, validators):
    worker, v0, v1 = workers[0], validators[0], validators[1]
    ledger.join(model, 0, b"peer", KEY, {"from": worker})
    ledger.registerValidator(model, 1, {"from": v1})
    tx = ledger.registerValidator(model, 0, {"from": v0})
    claim_id = submit(ledger, worker, model, 0, 1)
    eligible_at = tx.timestamp + TEST_LEDGER.validator_delay
    with reverts_with("ValidatorTooNew", v0.address, eligible_at):
        ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": v0})
    chain.sleep(TEST_LEDGER.validator_delay)
    with reverts_with("NotStageValidator", model, 0, v1.address):
        ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": v1})
    with reverts_with("NotStageValidator", model, 0, validators[2].address):
        ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": validators[2]})
    ledger.challenge(claim_id, 1, 0, "0x" + "ee" * 32, {"from": v0})
    assert stakes(ledger, v0) == (5 * ETHER, ETHER)
