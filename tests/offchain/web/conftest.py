"""Fixtures for the web app's tests: one anvil for the whole session with the protocol deployed by
scripts/deploy.py and two models (ETH and an ERC-20) with holders and paid revenue; `pm web serve`;
one headless Chromium per module (Debian's chromium driven by Playwright) whose pages get the test
wallet (test_wallet.js) before their own scripts. Each test runs on a chain snapshot taken before
it and restored after it, and fails if its pages logged a console error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chain_testkit import anvil_account, brownie, start_anvil, stop
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from web_testkit import HOLDER_A, WebChain, serve_web, set_up_chain

from offchain.demo.anvil import rpc

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
WALLET_JS = (Path(__file__).parent / "test_wallet.js").read_text()
expect.set_options(timeout=20_000)  # a page's first chain read can take seconds on a loaded 2-core machine


@pytest.fixture(scope="session")
def web_chain(tmp_path_factory) -> Iterator[WebChain]:
    brownie("compile")
    process, url = start_anvil()
    try:
        yield set_up_chain(url, tmp_path_factory.mktemp("web-chain"))
    finally:
        stop(process)


@pytest.fixture(autouse=True)
def chain_snapshot(request) -> Iterator[None]:
    """Every test starts from the session chain's state and leaves it as it found it."""
    if "web_chain" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("web_chain").url
    snapshot = rpc(url, "evm_snapshot")
    try:
        yield
    finally:
        rpc(url, "evm_revert", [snapshot])


@pytest.fixture(scope="session")
def web_url(web_chain, tmp_path_factory) -> Iterator[str]:
    process, url = serve_web(web_chain, tmp_path_factory.mktemp("web"))
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser, web_chain) -> Iterator[Callable[..., Page]]:
    """open_page(url, account=..., wallet_chain=..., known_chains=..., unknown_chain_error=...,
    http_errors=...): a new browser context with the test wallet; every console error of its pages
    fails the test, except Chromium's own line for an HTTP status listed in `http_errors` (a test
    that makes the gateway answer 503 on purpose)."""
    contexts, errors = [], []

    def open_(
        url: str,
        account: int = HOLDER_A,
        wallet_chain: int | None = None,
        known_chains: tuple[int, ...] | None = None,
        unknown_chain_error: str = "4902",
        http_errors: tuple[int, ...] = (),
    ) -> Page:
        setup = {
            "rpcUrl": web_chain.url,
            "anvilChainId": web_chain.chain_id,
            "account": anvil_account(account).address,
            "walletChainId": wallet_chain or web_chain.chain_id,
            "knownChains": list(known_chains or (web_chain.chain_id,)),
            "unknownChainError": unknown_chain_error,
        }
        context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        contexts.append(context)
        context.add_init_script(f"window.__testWalletSetup = {json.dumps(setup)};\n{WALLET_JS}")
        page = context.new_page()
        expected = {
            f"Failed to load resource: the server responded with a status of {s} " for s in http_errors
        }

        def console(message: ConsoleMessage) -> None:
            if message.type == "error" and not any(message.text.startswith(e) for e in expected):
                errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"console errors: {errors}"
