"""The holder's page in a real browser against a real chain: connect, switch network, claim one
model and all of them, refuse in the wallet, follow the wallet's account and chain, export history."""

from __future__ import annotations

import csv
import io
import re

import pytest
from chain_testkit import anvil_account
from playwright.sync_api import expect
from web_testkit import (
    ETH_MODEL,
    HOLDER_A,
    HOLDER_B,
    TOKEN_MODEL,
    assert_keyboard_reachable,
    connect,
    screenshot,
)

from offchain.holder.wallet import asset_of, holding

OTHER_CHAIN = 1


def holder_url(web_url: str) -> str:
    return f"{web_url}#/holder"


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


def claim_button(page, model_id: int):
    return row(page, model_id).get_by_role("button", name=re.compile(r"^Claim "))


def claims_of(web_chain, model_id: int, holder: str) -> list:
    """RevenueClaimed events of `holder` in the model, oldest first (web3.py, not the page)."""
    protocol = web_chain.protocol
    shares = protocol.shares(protocol.model(model_id))
    event = shares.events.RevenueClaimed()
    return event.get_logs(from_block=protocol.first_block(), argument_filters={"holder": holder})


def test_wrong_chain_is_explained_and_switched(open_page, web_url, web_chain):
    page = open_page(
        holder_url(web_url), wallet_chain=OTHER_CHAIN, known_chains=(OTHER_CHAIN, web_chain.chain_id)
    )
    connect(page)
    expect(page.locator(".wallet-bar")).to_contain_text(f"Your wallet is on chain {OTHER_CHAIN}")
    expect(claim_button(page, ETH_MODEL)).to_be_disabled()
    screenshot(page, "holder-wrong-chain")
    page.get_by_role("button", name=re.compile("^Switch to")).click()
    expect(claim_button(page, ETH_MODEL)).to_be_enabled()
    expect(page.locator(".wallet-bar")).not_to_contain_text("Your wallet is on chain")
    assert page.evaluate("testWallet.requests('wallet_addEthereumChain')") == []


@pytest.mark.parametrize("unknown_chain_error", ["4902", "nested", "-32603"])
def test_a_chain_the_wallet_does_not_know_is_added_then_switched(
    open_page, web_url, web_chain, unknown_chain_error
):
    page = open_page(
        holder_url(web_url),
        wallet_chain=OTHER_CHAIN,
        known_chains=(OTHER_CHAIN,),
        unknown_chain_error=unknown_chain_error,
    )
    connect(page)
    page.get_by_role("button", name=re.compile("^Switch to")).click()
    expect(claim_button(page, ETH_MODEL)).to_be_enabled()
    (added,) = page.evaluate("testWallet.requests('wallet_addEthereumChain')")
    assert added == [
        {
            "chainId": hex(web_chain.chain_id),
            "chainName": f"Protocol Models chain {web_chain.chain_id} (local)",
            "nativeCurrency": {"name": "Ether", "symbol": "ETH", "decimals": 18},
            "rpcUrls": [web_chain.url],
        }
    ]
    switches = page.evaluate("testWallet.requests('wallet_switchEthereumChain')")
    assert switches == [[{"chainId": hex(web_chain.chain_id)}]] * 2


def test_claim_on_an_eth_model_pays_exactly_the_claimable_amount(open_page, web_url, web_chain):
    """The wallet holds the request first: nothing can be clicked twice while it waits. After the
    receipt the page re-reads the chain: claimable 0, claimed = the amount, without a reload."""
    holder = anvil_account(HOLDER_A).address
    protocol = web_chain.protocol
    w3 = protocol.client.w3
    page = open_page(holder_url(web_url))
    connect(page)
    held = holding(protocol, ETH_MODEL, holder)
    asset = asset_of(protocol, protocol.model(ETH_MODEL))
    expect(cell(page, ETH_MODEL, "claimable")).to_have_attribute("data-raw", str(held.claimable))
    page.evaluate("window.loadedOnce = true; testWallet.setMode('hold')")
    balance_before = w3.eth.get_balance(holder)

    claim_button(page, ETH_MODEL).click()
    expect(row(page, ETH_MODEL).get_by_role("status")).to_contain_text(
        "Confirm claim from model 1 in your wallet"
    )
    expect(claim_button(page, ETH_MODEL)).to_be_disabled()
    expect(claim_button(page, TOKEN_MODEL)).to_be_disabled()
    expect(page.get_by_role("button", name=re.compile("^Claim all"))).to_be_disabled()
    page.evaluate("testWallet.setMode('approve'); testWallet.release()")

    expect(row(page, ETH_MODEL).get_by_role("status")).to_contain_text(
        f"Claimed {asset.format(held.claimable)}."
    )
    expect(cell(page, ETH_MODEL, "claimable")).to_have_attribute("data-raw", "0")
    expect(cell(page, ETH_MODEL, "claimable")).to_have_text("0 ETH")
    expect(cell(page, ETH_MODEL, "claimed")).to_have_text(asset.format(held.claimable))
    expect(claim_button(page, ETH_MODEL)).to_be_disabled()
    expect(claim_button(page, TOKEN_MODEL)).to_be_enabled()
    assert page.evaluate("window.loadedOnce") is True  # the same page: no reload

    (claimed,) = claims_of(web_chain, ETH_MODEL, holder)
    receipt = w3.eth.get_transaction_receipt(claimed["transactionHash"])
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert claimed["args"]["amount"] == held.claimable
    assert w3.eth.get_balance(holder) == balance_before + held.claimable - gas
    screenshot(page, "holder-claimed")


def test_claim_all_over_an_eth_and_an_erc20_model_then_export_the_history(open_page, web_url, web_chain):
    holder = anvil_account(HOLDER_A).address
    protocol = web_chain.protocol
    token = protocol.client.contract("IERC20", web_chain.token)
    before = {model_id: holding(protocol, model_id, holder) for model_id in (ETH_MODEL, TOKEN_MODEL)}
    tokens_before = token.functions.balanceOf(holder).call()
    page = open_page(holder_url(web_url))
    connect(page)
    page.get_by_role("button", name="Claim all (2 models)").click()
    for model_id in (ETH_MODEL, TOKEN_MODEL):
        asset = asset_of(protocol, protocol.model(model_id))
        status = row(page, model_id).get_by_role("status")
        expect(status).to_contain_text(f"Claimed {asset.format(before[model_id].claimable)}.")
        expect(cell(page, model_id, "claimable")).to_have_attribute("data-raw", "0")
    assert token.functions.balanceOf(holder).call() == tokens_before + before[TOKEN_MODEL].claimable
    (eth_claim,) = claims_of(web_chain, ETH_MODEL, holder)
    (token_claim,) = claims_of(web_chain, TOKEN_MODEL, holder)
    assert eth_claim["blockNumber"] < token_claim["blockNumber"]  # one transaction per model, in order
    assert len(page.evaluate("testWallet.requests('eth_sendTransaction')")) == 2

    with page.expect_download() as download:
        page.get_by_role("button", name="Export claim history (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert [(r["model_id"], r["block"], r["tx"], r["amount_raw"], r["asset_symbol"]) for r in rows] == [
        (
            str(model_id),
            str(log["blockNumber"]),
            log["transactionHash"].to_0x_hex(),
            str(log["args"]["amount"]),
            sym,
        )
        for model_id, log, sym in ((ETH_MODEL, eth_claim, "ETH"), (TOKEN_MODEL, token_claim, "REV"))
    ]


def test_refusals_in_the_wallet_send_nothing(open_page, web_url, web_chain):
    holder = anvil_account(HOLDER_A).address
    w3 = web_chain.protocol.client.w3
    claimable = holding(web_chain.protocol, ETH_MODEL, holder).claimable
    page = open_page(holder_url(web_url))
    page.evaluate("testWallet.setMode('reject')")
    page.get_by_role("button", name="Connect Test Wallet").click()
    expect(page.locator(".wallet-bar")).to_contain_text("You rejected the request in your wallet (connect)")
    page.evaluate("testWallet.setMode('approve')")
    connect(page)

    nonce = w3.eth.get_transaction_count(holder)
    page.evaluate("testWallet.setMode('reject')")
    claim_button(page, ETH_MODEL).click()
    status = row(page, ETH_MODEL).get_by_role("status")
    expect(status).to_contain_text(
        "You rejected the request in your wallet (claim from model 1); nothing was sent."
    )
    expect(claim_button(page, ETH_MODEL)).to_be_enabled()
    screenshot(page, "holder-rejected")
    page.evaluate("testWallet.setMode('busy')")
    claim_button(page, ETH_MODEL).click()
    expect(status).to_contain_text("Your wallet already has a request from this page waiting")
    assert w3.eth.get_transaction_count(holder) == nonce
    expect(cell(page, ETH_MODEL, "claimable")).to_have_attribute("data-raw", str(claimable))


def test_the_page_follows_the_wallets_account_and_chain(open_page, web_url, web_chain):
    other = anvil_account(HOLDER_B).address
    page = open_page(holder_url(web_url))
    connect(page)
    expect(row(page, TOKEN_MODEL)).to_be_visible()
    page.evaluate(f"testWallet.switchAccount('{other}')")
    expect(page.locator(".wallet-bar")).to_contain_text(other[:6])
    expect(row(page, TOKEN_MODEL)).to_have_count(0)
    shares = holding(web_chain.protocol, ETH_MODEL, other).shares
    expect(cell(page, ETH_MODEL, "shares")).to_have_attribute("data-raw", str(shares))
    page.evaluate(f"testWallet.switchChain({OTHER_CHAIN})")
    expect(page.locator(".wallet-bar")).to_contain_text(f"Your wallet is on chain {OTHER_CHAIN}")
    expect(claim_button(page, ETH_MODEL)).to_be_disabled()
