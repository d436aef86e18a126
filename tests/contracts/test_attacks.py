"""Attacks on revenue: re-entrancy, share sandwiching, forced ETH, stray tokens, fee-on-transfer tokens."""

from brownie import ForceSend, MockFeeOnTransferERC20, ReentrantClaimer
from conftest import create_model, pay_eth, request_id, split, within_one_wei
from custom_errors import reverts_with

ETHER = 10**18


def test_reentering_claim_cannot_pay_twice(router, eth_model, eth_shares, minter, holders, deployer):
    attacker = ReentrantClaimer.deploy(eth_shares, True, {"from": deployer})
    eth_shares.mint(attacker, 1, {"from": minter})
    eth_shares.mint(holders[0], 1, {"from": minter})
    pay_eth(router, eth_model, ETHER, holders[4])
    owed = eth_shares.claimable(attacker)
    attacker.claim({"from": deployer})
    assert attacker.reentryAttempts() == 1
    assert attacker.reentryFailures() == 1
    assert attacker.balance() == owed
    assert eth_shares.claimable(attacker) == 0
    assert eth_shares.balance() == split(ETHER)[0] - owed


def test_a_receiver_that_reverts_on_reentry_gets_nothing(
    router, eth_model, eth_shares, minter, holders, deployer
):
    attacker = ReentrantClaimer.deploy(eth_shares, False, {"from": deployer})
    eth_shares.mint(attacker, 1, {"from": minter})
    pay_eth(router, eth_model, ETHER, holders[4])
    owed = eth_shares.claimable(attacker)
    with reverts_with("RevenueTransferFailed", attacker.address, owed):
        attacker.claim({"from": deployer})
    assert eth_shares.claimable(attacker) == owed
    assert attacker.balance() == 0


def test_buying_before_a_payment_and_selling_after_earns_exactly_that_payments_share(
    router, eth_model, eth_shares, minter, holders
):
    seller, sandwicher, payer = holders[0], holders[1], holders[4]
    eth_shares.mint(seller, 300, {"from": minter})
    for i in range(3):
        pay_eth(router, eth_model, ETHER, payer, label=f"earlier-{i}")
    eth_shares.transfer(sandwicher, 100, {"from": seller})  # buys a third right before the payment
    pay_eth(router, eth_model, 2 * ETHER, payer, label="target")
    eth_shares.transfer(seller, 100, {"from": sandwicher})  # sells right after
    pay_eth(router, eth_model, ETHER, payer, label="later")
    assert within_one_wei(eth_shares.claimable(sandwicher), split(2 * ETHER)[0] // 3)
    total = 4 * split(ETHER)[0] + split(2 * ETHER)[0]
    assert within_one_wei(eth_shares.claimable(seller), total - split(2 * ETHER)[0] // 3)


def test_forced_eth_changes_no_claim(router, eth_model, eth_shares, minter, holders, deployer):
    eth_shares.mint(holders[0], 1, {"from": minter})
    eth_shares.mint(holders[1], 1, {"from": minter})
    pay_eth(router, eth_model, ETHER, holders[4], label="before")
    claims = [eth_shares.claimable(h) for h in holders[:2]]
    ForceSend.deploy(eth_shares, {"from": deployer, "value": 5 * ETHER})
    assert eth_shares.balance() == split(ETHER)[0] + 5 * ETHER
    assert [eth_shares.claimable(h) for h in holders[:2]] == claims
    assert eth_shares.totalRevenue() == split(ETHER)[0]
    pay_eth(router, eth_model, ETHER, holders[4], label="after")
    assert eth_shares.totalRevenue() == 2 * split(ETHER)[0]
    assert within_one_wei(eth_shares.claimable(holders[0]), split(ETHER)[0])


def test_tokens_sent_directly_change_no_claim(router, token, token_model, token_shares, minter, holders):
    token_shares.mint(holders[0], 1, {"from": minter})
    token.mint(holders[4], 2_000, {"from": holders[4]})
    token.approve(router, 1_000, {"from": holders[4]})
    router.payForInference(token_model, request_id("direct-1"), 1_000, {"from": holders[4]})
    owed = token_shares.claimable(holders[0])
    token.transfer(token_shares, 1_000, {"from": holders[4]})
    assert token_shares.claimable(holders[0]) == owed
    assert token_shares.totalRevenue() == split(1_000)[0]


def test_fee_on_transfer_tokens_are_refused(router, registry, creator, operator, minter, holders, deployer):
    fot = MockFeeOnTransferERC20.deploy({"from": deployer})
    model_id = create_model(registry, creator, operator, asset=fot.address)
    fot.mint(holders[4], 10_000, {"from": holders[4]})
    fot.approve(router, 10_000, {"from": holders[4]})
    with reverts_with("PaymentNotReceived", 10_000, 9_900):
        router.payForInference(model_id, request_id("fot"), 10_000, {"from": holders[4]})
    assert not router.isPaid(request_id("fot"))
