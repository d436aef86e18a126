"""WorkLedger membership: one stage per model per address, stake and model checks."""

from brownie import chain
from conftest import ETHER, TEST_LEDGER, create_model, submit
from custom_errors import reverts_with

KEY = b"\x07" * 32


def test_join_and_leave_maintain_the_member_lists(ledger, model, staked, workers):
    a, b, c = workers
    tx = ledger.join(model, 0, b"peer-a", KEY, {"from": a})
    assert tx.events["Joined"] == {
        "modelId": model,
        "stage": 0,
        "account": a,
        "peerId": "0x" + b"peer-a".hex(),
        "encryptionKey": "0x" + KEY.hex(),
    }
    ledger.join(model, 0, b"peer-b", KEY, {"from": b})
    ledger.join(model, 1, b"peer-c", KEY, {"from": c})
    assert ledger.membersOf(model, 0) == [a, b]
    assert ledger.membersOf(model, 1) == [c]
    assert tuple(ledger.stageOf(model, c)) == (True, 1)

    tx = ledger.leave(model, {"from": a})
    assert tx.events["Left"] == {"modelId": model, "stage": 0, "account": a}
    assert ledger.membersOf(model, 0) == [b]
    assert tuple(ledger.stageOf(model, a)) == (False, 0)
    ledger.join(model, 0, b"peer-a", KEY, {"from": a})  # back to its stage (the only one it may take)
    assert ledger.membersOf(model, 0) == [b, a]
    ledger.leave(model, {"from": b})
    assert ledger.membersOf(model, 0) == [a]


def test_an_address_holds_at_most_one_stage_per_model(ledger, protocol, model, staked, workers, accounts):
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    with reverts_with("AlreadyMemberOfModel", model, a.address, 0):
        ledger.join(model, 1, b"peer", KEY, {"from": a})
    with reverts_with("AlreadyMemberOfModel", model, a.address, 0):
        ledger.join(model, 0, b"peer", KEY, {"from": a})
    other = create_model(protocol.registry, accounts[1], accounts[2])
    ledger.join(other, 1, b"peer", KEY, {"from": a})  # a stage of another model is fine
    assert ledger.stakeOf(a)["memberships"] == 2


def test_join_checks_stake_stage_and_model(ledger, protocol, model, staked, workers, accounts):
    poor = accounts[1]
    ledger.stake({"from": poor, "value": ETHER})
    with reverts_with("InsufficientStake", poor.address, 2 * ETHER, ETHER):
        ledger.join(model, 0, b"peer", KEY, {"from": poor})
    with reverts_with("StageOutOfRange", model, 2):
        ledger.join(model, 2, b"peer", KEY, {"from": workers[0]})
    missing = protocol.registry.modelCount() + 1
    with reverts_with("UnknownModel", missing):
        ledger.join(missing, 0, b"peer", KEY, {"from": workers[0]})
    protocol.registry.setStatus(model, 1, {"from": accounts[1]})
    with reverts_with("ModelNotActive", model):
        ledger.join(model, 0, b"peer", KEY, {"from": workers[0]})
    with reverts_with("NotModelMember", model, workers[0].address):
        ledger.leave(model, {"from": workers[0]})


def test_a_worker_with_open_claims_cannot_move_to_another_stage(ledger, model, staked, workers):
    """Leaving keeps the lane's open claims (they still settle); the address holds their stage
    for good (test_ledger_stage_binding.py), so it may come back to that stage only."""
    a = workers[0]
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    claim_id = submit(ledger, a, model, 0, 1)
    ledger.leave(model, {"from": a})
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.join(model, 1, b"peer", KEY, {"from": a})
    ledger.join(model, 0, b"peer", KEY, {"from": a})
    ledger.leave(model, {"from": a})
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(claim_id, {"from": a})  # a former member's claim still finalizes
    with reverts_with("AlreadyHoldsOtherStage", model, a.address, 0):
        ledger.join(model, 1, b"peer", KEY, {"from": a})
