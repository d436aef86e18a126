"""The one-stage rule holds over time, not only at each instant: the first stage an address takes
in a model, as worker or validator, is the only one it may ever take there. Otherwise an address
could leave stage 0 and take stage 1, then stage 2, keeping every stage key it was handed on the
way (a leaver keeps its keys), and so collect the whole model."""

from conftest import create_model
from custom_errors import reverts_with

KEY = b"\x07" * 32


def test_a_former_worker_cannot_take_another_stage(ledger, model, staked, workers):
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    ledger.leave(model, {"from": a})  # no open claims: nothing else binds it
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.join(model, 1, b"peer", KEY, {"from": a})
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.registerValidator(model, 1, {"from": a})
    ledger.join(model, 0, b"peer", KEY, {"from": a})  # its own stage again is fine
    ledger.registerValidator(model, 0, {"from": a})


def test_a_former_validator_cannot_take_another_stage(ledger, model, staked, validators):
    v = validators[0]
    ledger.registerValidator(model, 1, {"from": v})
    ledger.leaveValidator(model, {"from": v})
    with reverts_with("AlreadyHoldsOtherStage", model, v.address, 1):
        ledger.registerValidator(model, 0, {"from": v})
    with reverts_with("AlreadyHoldsOtherStage", model, v.address, 1):
        ledger.join(model, 0, b"peer", KEY, {"from": v})
    ledger.registerValidator(model, 1, {"from": v})
    assert tuple(ledger.validatorOf(model, v))[:2] == (True, 1)


def test_the_binding_is_per_model(ledger, protocol, model, staked, workers, accounts):
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    ledger.leave(model, {"from": a})
    other = create_model(protocol.registry, accounts[1], accounts[2])
    ledger.join(other, 1, b"peer", KEY, {"from": a})
    assert tuple(ledger.stageOf(other, a)) == (True, 1)
