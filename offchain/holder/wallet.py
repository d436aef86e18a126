"""A share holder's view: balance, share of supply, revenue claimable and claimed; and claiming it.

Amounts are kept in the asset's smallest unit (wei for ETH) everywhere and only formatted for
people at the edge, so `--json` output can be summed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from web3.contract import Contract
from web3.logs import DISCARD

from offchain.chain.protocol import ModelInfo, Protocol
from offchain.errors import UserError


@dataclass(frozen=True)
class Asset:
    """The revenue asset of a model: ETH or an ERC-20."""

    address: str
    symbol: str
    decimals: int

    def format(self, amount: int) -> str:
        value = Decimal(amount).scaleb(-self.decimals)
        return f"{value.normalize():f} {self.symbol}"


@dataclass(frozen=True)
class Holding:
    model_id: int
    holder: str
    shares: int
    supply: int
    claimable: int
    claimed: int
    asset: Asset

    @property
    def percent_of_supply(self) -> float:
        return 100.0 * self.shares / self.supply if self.supply else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "holder": self.holder,
            "shares": str(self.shares),
            "supply": str(self.supply),
            "percent_of_supply": round(self.percent_of_supply, 6),
            "claimable_wei": str(self.claimable),
            "claimed_wei": str(self.claimed),
            "asset": self.asset.address,
            "asset_symbol": self.asset.symbol,
        }


@dataclass(frozen=True)
class Claimed:
    model_id: int
    amount: int
    tx_hash: str
    asset: Asset

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "amount_wei": str(self.amount), "tx": self.tx_hash}


def asset_of(protocol: Protocol, model: ModelInfo) -> Asset:
    if model.pays_in_eth:
        return Asset(model.revenue_asset, "ETH", 18)
    token = protocol.client.contract("IERC20Metadata", model.revenue_asset)
    return Asset(model.revenue_asset, token.functions.symbol().call(), token.functions.decimals().call())


def claimed_so_far(protocol: Protocol, shares: Contract, holder: str) -> int:
    """Sum of the holder's RevenueClaimed events since the protocol was deployed."""
    event = shares.events.RevenueClaimed()
    logs = protocol.client.rpc(
        "get_logs",
        lambda: event.get_logs(from_block=protocol.first_block(), argument_filters={"holder": holder}),
    )
    return sum(log["args"]["amount"] for log in logs)


def holding(protocol: Protocol, model_id: int, holder: str) -> Holding:
    model = protocol.model(model_id)
    shares = protocol.shares(model)
    return Holding(
        model_id=model_id,
        holder=holder,
        shares=shares.functions.balanceOf(holder).call(),
        supply=shares.functions.totalSupply().call(),
        claimable=shares.functions.claimable(holder).call(),
        claimed=claimed_so_far(protocol, shares, holder),
        asset=asset_of(protocol, model),
    )


def models_held(protocol: Protocol, holder: str) -> list[int]:
    """Every model in which `holder` has shares or unclaimed revenue."""
    held = []
    for model_id in range(1, protocol.registry.functions.modelCount().call() + 1):
        shares = protocol.shares(protocol.model(model_id))
        if shares.functions.balanceOf(holder).call() or shares.functions.claimable(holder).call():
            held.append(model_id)
    return held


def claim(protocol: Protocol, model_id: int) -> Claimed:
    """Send ModelShares.claim() for the caller; the amount is read from the RevenueClaimed event."""
    model = protocol.model(model_id)
    shares = protocol.shares(model)
    holder = protocol.client.address
    if shares.functions.claimable(holder).call() == 0:
        raise UserError(f"nothing to claim in model {model_id} for {holder}")
    receipt = protocol.client.transact(shares.functions.claim(), action=f"claim (model {model_id})")
    events = shares.events.RevenueClaimed().process_receipt(receipt, errors=DISCARD)
    amount = sum(event["args"]["amount"] for event in events)
    return Claimed(model_id, amount, receipt["transactionHash"].to_0x_hex(), asset_of(protocol, model))
