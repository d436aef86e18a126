"""Revenue per share x supply must fit the share accounting's signed 256 bits. A payer who pays a
model a huge amount of a many-unit ERC-20 makes the magnified revenue per share so large that
minting the next run's shares would overflow it: such a finalize must still settle (it mints what
the accounting can hold, like the supply cap rule), never lock the lane and its bonds, and the
holders must still be able to claim and transfer."""

import pytest
from brownie import MockERC20, ModelShares, chain
from conftest import ETHER, TEST_LEDGER, create_model, request_id, stakes, submit
from custom_errors import reverts_with

KEY = b"\x07" * 32
REVENUE = 2**120 - 1  # what the router lets a model's holders receive in all: 85% of it here


@pytest.fixture
def inflated(protocol, ledger, staked, workers, accounts):
    """A one-stage model paid in a many-unit ERC-20; its first work unit finalized, then paid."""
    token = MockERC20.deploy("Many Units", "MANY", {"from": accounts[0]})
    model = create_model(
        protocol.registry, accounts[1], accounts[2], asset=token.address, num_stages=1, rate=ETHER
    )
    worker = workers[0]
    ledger.join(model, 0, b"w", KEY, {"from": worker})
    first = submit(ledger, worker, model, 0, 1, work_units=1)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    ledger.finalize(first, {"from": worker})
    payer = accounts[8]
    token.mint(payer, REVENUE, {"from": payer})
    token.approve(protocol.router, REVENUE, {"from": payer})
    protocol.router.payForInference(model, request_id("huge"), REVENUE, {"from": payer})
    shares = ModelShares.at(protocol.registry.getModel(model)["shares"])
    return model, worker, ledger.getClaim(first)["checkpointCID"], shares


def test_a_run_past_the_accounting_limit_mints_what_fits_and_settles(ledger, inflated, accounts):
    model, worker, parent, shares = inflated
    claim_id = submit(ledger, worker, model, 0, 2, parent=parent, work_units=1_000)
    chain.sleep(TEST_LEDGER.challenge_window + 1)
    room = shares.mintable()
    assert 0 < room < 1_000 * ETHER  # 1,000 units are claimed: more than the token can hold
    tx = ledger.finalize(claim_id, {"from": worker})
    assert tx.events["ClaimFinalized"]["sharesMinted"] == room  # the rest is forfeited
    assert stakes(ledger, worker)[1] == 0  # the bond came back: the lane is free
    assert shares.mintable() == 0
    claimable = shares.claimable(worker)
    assert shares.claim({"from": worker}).return_value == claimable > 0
    shares.transfer(accounts[8], shares.balanceOf(worker) // 2, {"from": worker})
    assert shares.claimable(accounts[8]) == 0


def test_the_token_refuses_a_mint_past_its_limit_with_the_limit(
    router, token, token_model, token_shares, minter, holders
):
    """ModelShares itself: mintable() is exact, one share more reverts SupplyCapExceeded(supply, limit)
    instead of overflowing, and the holders' accounting keeps working at the limit."""
    holder, payer = holders[0], holders[4]
    token_shares.mint(holder, ETHER, {"from": minter})
    token.mint(payer, REVENUE, {"from": payer})
    token.approve(router, REVENUE, {"from": payer})
    router.payForInference(token_model, request_id("huge-token"), REVENUE, {"from": payer})
    room = token_shares.mintable()
    with reverts_with("SupplyCapExceeded", ETHER + room + 1, ETHER + room):
        token_shares.mint(holders[1], room + 1, {"from": minter})
    token_shares.mint(holders[1], room, {"from": minter})
    assert token_shares.mintable() == 0
    token_shares.transfer(holders[1], ETHER // 2, {"from": holder})
    paid = token_shares.claim({"from": holder}).return_value
    assert paid == token.balanceOf(holder) > 0
    assert token_shares.claimable(holders[1]) == 0  # minted and received after the payment
