"""RevenueRouter: the fee split, one payment per request id, fee withdrawal and the spill of large
accruals, the status copy the registry keeps, admin settings."""

from brownie import RevenueRouter
from conftest import OPERATOR_FEE_BPS, PROTOCOL_FEE_BPS, ZERO_ADDRESS, pay_eth, request_id, split
from custom_errors import reverts_with

ETHER = 10**18
U64 = 2**64 - 1


def pay_token(router, token, model_id, amount, payer, label):
    token.mint(payer, amount, {"from": payer})
    token.approve(router, amount, {"from": payer})
    return router.payForInference(model_id, request_id(label), amount, {"from": payer})


def test_payment_is_split_recorded_and_evented(router, eth_model, eth_shares, minter, holders):
    eth_shares.mint(holders[0], 1, {"from": minter})
    payer = holders[4]
    rid = request_id("split")
    assert not router.isPaid(rid)
    tx = router.payForInference(eth_model, rid, ETHER, {"from": payer, "value": ETHER})
    to_holders, to_operator, to_protocol = split(ETHER)
    assert tx.events["InferencePaid"] == {
        "modelId": eth_model,
        "requestId": rid,
        "payer": payer,
        "amount": ETHER,
        "toHolders": to_holders,
        "toOperator": to_operator,
        "toProtocol": to_protocol,
    }
    assert router.isPaid(rid)
    assert list(router.paymentOf(rid)) == [eth_model, ETHER]
    assert list(router.feesOwed(eth_model)) == [to_protocol, to_operator]
    assert router.holderRevenueOf(eth_model) == eth_shares.totalRevenue() == to_holders
    assert router.balance() == to_protocol + to_operator
    assert eth_shares.balance() == to_holders


def test_a_request_id_pays_once(router, eth_model, holders):
    rid = request_id("once")
    router.payForInference(eth_model, rid, 100, {"from": holders[4], "value": 100})
    with reverts_with("RequestAlreadyPaid", bytes.fromhex(rid[2:])):
        router.payForInference(eth_model, rid, 100, {"from": holders[3], "value": 100})


def test_bad_payments_revert(router, registry, eth_model, token_model, creator, holders):
    payer = holders[4]
    with reverts_with("ZeroPayment"):
        router.payForInference(eth_model, request_id("zero"), 0, {"from": payer})
    with reverts_with("PaymentValueMismatch", 100, 99):
        router.payForInference(eth_model, request_id("short"), 100, {"from": payer, "value": 99})
    with reverts_with("PaymentValueMismatch", 100, 0):
        router.payForInference(eth_model, request_id("no-eth"), 100, {"from": payer})
    with reverts_with("RevenueValueMismatch", 0, 85):  # 100 minus the 15% of fees the router keeps
        router.payForInference(token_model, request_id("eth-to-token"), 100, {"from": payer, "value": 100})
    missing = registry.modelCount() + 1
    with reverts_with("UnknownModel", missing):
        router.payForInference(missing, request_id("missing"), 100, {"from": payer, "value": 100})
    registry.setStatus(eth_model, 1, {"from": creator})
    with reverts_with("ModelNotActive", eth_model):
        router.payForInference(eth_model, request_id("paused"), 100, {"from": payer, "value": 100})


def test_fees_are_withdrawn_to_the_treasury_and_the_operator(
    router, eth_model, token, token_model, treasury, operator, holders, accounts
):
    pay_eth(router, eth_model, ETHER, holders[4])
    _, to_operator, to_protocol = split(ETHER)
    treasury_before, operator_before = treasury.balance(), operator.balance()
    tx = router.withdrawProtocolFees(eth_model, {"from": accounts[6]})  # anyone may trigger it
    assert tx.events["FeesWithdrawn"] == {"modelId": eth_model, "to": treasury, "amount": to_protocol}
    router.withdrawOperatorFees(eth_model, {"from": accounts[6]})
    assert treasury.balance() - treasury_before == to_protocol
    assert operator.balance() - operator_before == to_operator
    assert list(router.feesOwed(eth_model)) == [0, 0]
    assert router.withdrawProtocolFees(eth_model, {"from": accounts[6]}).return_value == 0
    assert router.balance() == 0

    token.mint(holders[4], 10_000, {"from": holders[4]})
    token.approve(router, 10_000, {"from": holders[4]})
    router.payForInference(token_model, request_id("token-fees"), 10_000, {"from": holders[4]})
    router.withdrawProtocolFees(token_model, {"from": treasury})
    router.withdrawOperatorFees(token_model, {"from": operator})
    assert token.balanceOf(treasury) == 10_000 * PROTOCOL_FEE_BPS // 10_000
    assert token.balanceOf(operator) == 10_000 * OPERATOR_FEE_BPS // 10_000
    assert token.balanceOf(router) == 0


def test_fee_accruals_past_64_bits_spill_and_are_withdrawn_whole(
    router, token, token_model, treasury, operator, holders
):
    """The model's slot keeps each accrual below 2^64; the payment that would pass it moves the
    whole accrual to the spill slot, and feesOwed / withdrawals add both."""
    payer = holders[4]
    amount = 10_000 * (U64 // PROTOCOL_FEE_BPS)  # its protocol fee alone fits 64 bits
    fees = [amount * PROTOCOL_FEE_BPS // 10_000, amount * OPERATOR_FEE_BPS // 10_000]
    assert fees[0] <= U64 < 2 * fees[0] and U64 < fees[1]
    pay_token(router, token, token_model, amount, payer, "spill-1")
    pay_token(router, token, token_model, amount, payer, "spill-2")
    assert list(router.feesOwed(token_model)) == [2 * fees[0], 2 * fees[1]]
    assert router.withdrawProtocolFees(token_model, {"from": payer}).return_value == 2 * fees[0]
    assert router.withdrawOperatorFees(token_model, {"from": payer}).return_value == 2 * fees[1]
    assert (token.balanceOf(treasury), token.balanceOf(operator)) == (2 * fees[0], 2 * fees[1])
    assert list(router.feesOwed(token_model)) == [0, 0]
    pay_token(router, token, token_model, 10_000, payer, "after-spill")
    assert list(router.feesOwed(token_model)) == [PROTOCOL_FEE_BPS, OPERATOR_FEE_BPS]  # 10,000 units paid


def test_the_holders_total_reverts_rather_than_wraps_past_120_bits(router, token, token_model, holders):
    payer = holders[4]
    to_holders = split(2**120)[0]
    pay_token(router, token, token_model, 2**120, payer, "huge-1")
    assert router.holderRevenueOf(token_model) == to_holders
    with reverts_with("SafeCastOverflowedUintDowncast", 120, 2 * to_holders):
        pay_token(router, token, token_model, 2**120, payer, "huge-2")


def test_the_registry_keeps_the_router_status_copy(router, registry, eth_model, creator, holders):
    payer = holders[4]
    with reverts_with("NotRegistry", creator.address):
        router.setModelStatus(eth_model, 1, {"from": creator})
    registry.setStatus(eth_model, 2, {"from": creator})
    with reverts_with("ModelNotActive", eth_model):
        pay_eth(router, eth_model, 100, payer)
    registry.setStatus(eth_model, 0, {"from": creator})
    pay_eth(router, eth_model, 100, payer)
    assert router.holderRevenueOf(eth_model) == split(100)[0]


def test_fee_settings_are_admin_only_capped_and_evented(router, deployer, treasury, accounts):
    with reverts_with("OwnableUnauthorizedAccount", accounts[5].address):
        router.setFees(0, 0, {"from": accounts[5]})
    with reverts_with("FeesTooHigh", 2001, 2000):
        router.setFees(1000, 1001, {"from": deployer})
    tx = router.setFees(1500, 500, {"from": deployer})
    assert tx.events["FeesChanged"] == {"protocolFeeBps": 1500, "operatorFeeBps": 500}
    assert (router.protocolFeeBps(), router.operatorFeeBps()) == (1500, 500)

    with reverts_with("OwnableUnauthorizedAccount", accounts[5].address):
        router.setTreasury(accounts[5], {"from": accounts[5]})
    with reverts_with("ZeroAddress"):
        router.setTreasury(ZERO_ADDRESS, {"from": deployer})
    tx = router.setTreasury(accounts[6], {"from": deployer})
    assert tx.events["TreasuryChanged"] == {"treasury": accounts[6]}
    assert router.treasury() == accounts[6]


def test_admin_handover_takes_two_steps(router, deployer, accounts):
    router.transferOwnership(accounts[6], {"from": deployer})
    assert router.owner() == deployer
    router.acceptOwnership({"from": accounts[6]})
    assert router.owner() == accounts[6]
    with reverts_with("OwnableUnauthorizedAccount", deployer.address):
        router.setFees(0, 0, {"from": deployer})


def test_constructor_enforces_the_fee_cap(deployer, registry, treasury):
    with reverts_with("FeesTooHigh", 2500, 2000):
        RevenueRouter.deploy(deployer, registry, treasury, 2000, 500, {"from": deployer})
