"""Stateful: random mints, transfers, payments and claims across six holders, checked against an
exact rational model of every holder's pro-rata entitlement, for an ETH and an ERC-20 model. The model
also tracks the token's magnified revenue per share, so it predicts exactly how many shares can still
be minted (a payment to a tiny supply lowers that limit) and that a mint past it reverts."""

from fractions import Fraction

import pytest
import stateful
from conftest import request_id, split
from custom_errors import reverts_with
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

HOLDERS = 6
SETTINGS = {"max_examples": 15, "stateful_step_count": 20}
MAGNITUDE = 2**128
SUPPLY_CAP = 2**128 - 1
MAX_MAGNIFIED_SUPPLY = 2**254  # revenue per share x supply after a mint stays within this

holder_index = st.integers(min_value=0, max_value=HOLDERS - 1)


class RevenueMachine(stateful.ChainStateMachine):
    """Subclassed per test with: router, shares, model_id, token (None = ETH), minter, payer, holders."""

    def __init__(self):
        super().__init__()
        self.balances = [0] * HOLDERS
        self.entitled = [Fraction(0)] * HOLDERS
        self.claimed = [0] * HOLDERS
        self.held = 0
        self.revenue = 0
        self.payments = 0
        self.per_share = 0  # the token's magnified revenue per share, floors included

    def supply_limit(self):
        if self.per_share == 0:
            return SUPPLY_CAP
        return min(SUPPLY_CAP, MAX_MAGNIFIED_SUPPLY // self.per_share)

    def asset_balance(self, account):
        return account.balance() if self.token is None else self.token.balanceOf(account)

    @rule(holder=holder_index, share_amount=st.integers(min_value=1, max_value=10**24))
    def mint(self, holder, share_amount):
        supply_before = sum(self.balances)
        limit = self.supply_limit()
        if supply_before + share_amount > limit:
            with reverts_with("SupplyCapExceeded", supply_before + share_amount, limit):
                self.shares.mint(self.holders[holder], share_amount, {"from": self.minter})
            return
        self.shares.mint(self.holders[holder], share_amount, {"from": self.minter})
        self.balances[holder] += share_amount
        if supply_before == 0 and self.held:
            self.entitled[holder] += self.held
            self.per_share += self.held * MAGNITUDE // share_amount
            self.held = 0

    @rule(holder=holder_index, other=holder_index, numerator=st.integers(min_value=0, max_value=255))
    def transfer(self, holder, other, numerator):
        amount = self.balances[holder] * numerator // 255
        self.shares.transfer(self.holders[other], amount, {"from": self.holders[holder]})
        self.balances[holder] -= amount
        self.balances[other] += amount

    @rule(payment=st.integers(min_value=1, max_value=10**20))
    def pay(self, payment):
        self.payments += 1
        rid = request_id(f"stateful-{self.payments}")
        if self.token is None:
            tx = self.router.payForInference(
                self.model_id, rid, payment, {"from": self.payer, "value": payment}
            )
        else:
            self.token.mint(self.payer, payment, {"from": self.payer})
            self.token.approve(self.router, payment, {"from": self.payer})
            tx = self.router.payForInference(self.model_id, rid, payment, {"from": self.payer})
        to_holders = split(payment)[0]
        assert tx.events["InferencePaid"]["toHolders"] == to_holders
        self.revenue += to_holders
        supply = sum(self.balances)
        if supply == 0:
            self.held += to_holders
            return
        self.per_share += to_holders * MAGNITUDE // supply
        for i, balance in enumerate(self.balances):
            self.entitled[i] += Fraction(to_holders * balance, supply)

    @rule(holder=holder_index)
    def claim(self, holder):
        account = self.holders[holder]
        expected = self.shares.claimable(account)
        before = self.asset_balance(account)
        self.shares.claim({"from": account})
        paid = self.asset_balance(account) - before  # gas price is 0 on the development network
        assert paid == expected
        self.claimed[holder] += paid

    @invariant()
    def accounting_matches_the_exact_model(self):
        claimables = [self.shares.claimable(h) for h in self.holders]
        for i, claimable in enumerate(claimables):
            owed = self.entitled[i] - self.claimed[i]
            # Floors leave each holder < 1 wei behind, and each deposit's per-share rounding far
            # less (balance / 2^128 wei); nothing ever puts a holder ahead.
            assert owed - 1 - Fraction(1, 10**9) <= claimable <= owed
        total_claimed = self.shares.totalClaimed()
        assert total_claimed == sum(self.claimed)
        assert self.shares.totalRevenue() == self.revenue
        assert self.shares.heldRevenue() == self.held
        gap = self.revenue - self.held - total_claimed - sum(claimables)
        # Undistributed dust: under one wei of fraction per holder plus the per-deposit rounding.
        assert 0 <= gap <= HOLDERS + 1
        assert self.asset_balance(self.shares) == self.revenue - total_claimed
        assert self.shares.mintable() == max(0, self.supply_limit() - sum(self.balances))


def run_machine(**context):
    stateful.run(type("Machine", (RevenueMachine,), context), **SETTINGS)


@pytest.mark.slow
def test_eth_revenue_matches_exact_pro_rata(router, eth_model, eth_shares, minter, accounts):
    run_machine(
        router=router,
        shares=eth_shares,
        model_id=eth_model,
        token=None,
        minter=minter,
        payer=accounts[8],
        holders=accounts[2:8],
    )


@pytest.mark.slow
def test_erc20_revenue_matches_exact_pro_rata(router, token, token_model, token_shares, minter, accounts):
    run_machine(
        router=router,
        shares=token_shares,
        model_id=token_model,
        token=token,
        minter=minter,
        payer=accounts[8],
        holders=accounts[2:8],
    )
