"""Struct return values by field name: a view that returns a Solidity struct comes back from web3.py
as a bare tuple; naming its fields from the ABI keeps callers off positional indexes, which shift
whenever the struct gains a field (IWorkLedger v2's Claim has 22)."""

from __future__ import annotations

from typing import Any

from web3.contract.contract import ContractFunction

from offchain.chain.client import ChainClient


def call_struct(client: ChainClient, fn: ContractFunction, action: str = "") -> dict[str, Any]:
    """Call a view returning one struct; its fields by name (as the ABI spells them)."""
    raw = client.call(fn, action=action)
    (output,) = fn.abi["outputs"]
    return {component["name"]: value for component, value in zip(output["components"], raw, strict=True)}
