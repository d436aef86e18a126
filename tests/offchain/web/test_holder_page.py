"""The holder's page in a real browser against a real chain: connect, switch network, claim one
model and all of them, refuse in the wallet, follow the wallet's account and chain, export history."""

from __future__ import annotations

import csv
import io
import re

import pytest
from chain_testkit import anvil_account
from playwright.sync_api import expect
from web_testkit import ETH_MODEL, HOLDER_A, HOLDER_B, TOKEN_MODEL, assert_keyboard_reachable, screenshot

from offchain.holder.wallet import asset_of, holding

OTHER_CHAIN = 1


def holder_url(web_url: str) -> str:
    return f"{web_url}#/holder"


def connect(page):
    page.get_by_role("button", name="Connect Test Wallet").click()
    expect(page.locator(".wallet-bar")).to_contain_text("Test Wallet")


def row(page, model_id: int):
    return page.locator(f"tr[data-model='{model_id}']")


def cell(page, model_id: int, field: str):
    return row(page, model_id).locator(f"[data-field='{field}']")


def expected_percent(shares: int, supply: int) -> str:
    scaled = shares * 100 * 10**4 // supply
    return f"{scaled // 10**4}.{scaled % 10**4:04d}%"


def test_connect_shows_every_holding_as_the_chain_has_it(open_page, web_url, web_chain):
    page = open_page(holder_url(web_url))
    connect(page)
    expect(page.locator(".wallet-bar")).to_contain_text(anvil_account(HOLDER_A).address[:6])
    protocol = web_chain.protocol
    for model_id in (ETH_MODEL, TOKEN_MODEL):
        held = holding(protocol, model_id, anvil_account(HOLDER_A).address)
        asset = asset_of(protocol, protocol.model(model_id))
        expect(cell(page, model_id, "shares")).to_have_attribute("data-raw", str(held.shares))
        expect(cell(page, model_id, "percent")).to_have_text(expected_percent(held.shares, held.supply))
        expect(cell(page, model_id, "claimable")).to_have_text(asset.format(held.claimable))
        expect(cell(page, model_id, "claimed")).to_have_text(asset.format(0))
        assert held.claimable > 0
    screenshot(page, "holder")
    assert_keyboard_reachable(page)
