"""Helpers for the web app's tests: the session chain, `pm web serve`, screenshots, keyboard checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chain_testkit import REPO, anvil_account, deploy, deploy_protocol, earn_shares
from playwright.sync_api import Page, expect

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.demo.anvil import free_port
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, spawn_pm

ETHER = 10**18
SPEC = REPO / "specs" / "tiny.json"
SCREENSHOTS = REPO / "reports" / "web"  # docs/web.md names this folder
CREATOR, HOLDER_A, HOLDER_B, CUSTOMER, OPERATOR, VALIDATOR = 1, 2, 3, 5, 6, 7
ETH_MODEL, TOKEN_MODEL = 1, 2


@dataclass
class WebChain:
    url: str
    chain_id: int
    deployments: Path
    store: Path
    protocol: Protocol  # read-only handle
    token: str  # the ERC-20 model 2 is paid in

    def client(self, account: int) -> ChainClient:
        return ChainClient(self.url, anvil_account(account))

    def pay(self, model_id: int, amount: int, request_id: bytes, account: int = CUSTOMER) -> None:
        """payForInference from `account`, in ETH or (after an approve) in the model's ERC-20."""
        payer = self.client(account)
        router = payer.contract("RevenueRouter", self.protocol.router.address)
        if model_id == ETH_MODEL:
            payer.transact(router.functions.payForInference(model_id, request_id, amount), value=amount)
            return
        token = payer.contract("IERC20", self.token)
        payer.transact(token.functions.approve(router.address, amount))
        payer.transact(router.functions.payForInference(model_id, request_id, amount))


def set_up_chain(url: str, tmp: Path) -> WebChain:
    """Model 1 (ETH): holder A 3 units, holder B 1 unit and a claim still pending, a validator of
    stage 2; model 2 (ERC-20 "REV"): holder A 2 units; two payments to model 1 and one to model 2,
    so both holders have revenue to claim."""
    deployments, store = tmp / "deployments", EmbeddedStore(tmp / "store")
    deploy_protocol(url, deployments, anvil_account(0))
    creator = ChainClient(url, anvil_account(CREATOR))
    protocol = Protocol.load(creator, deployments)
    operator = anvil_account(OPERATOR).address
    create_model(protocol, store, SPEC, shares_per_work_unit=ETHER, revenue_asset="eth", operator=operator)
    token = deploy(creator, "MockERC20", "Revenue", "REV")
    creator.transact(token.functions.mint(anvil_account(CUSTOMER).address, 10**24))
    create_model(
        protocol, store, SPEC, shares_per_work_unit=ETHER, revenue_asset=token.address, operator=operator
    )
    holder_a, holder_b = (ChainClient(url, anvil_account(i)) for i in (HOLDER_A, HOLDER_B))
    earn_shares(protocol, holder_a, ETH_MODEL, 0, 3)
    earn_shares(protocol, holder_b, ETH_MODEL, 1, 1)
    earn_shares(protocol, holder_a, TOKEN_MODEL, 0, 2)
    ledger = holder_b.contract("WorkLedger", protocol.ledger.address)
    parent_cid, _, round_ = protocol.registry.functions.checkpointOf(ETH_MODEL, 1).call()
    next_round = round_ + 1
    pending = (
        ETH_MODEL,
        1,
        next_round,
        next_round,
        parent_cid,
        b"\x21" * 32,
        b"\x22" * 32,
        b"\x23" * 32,
        b"\x24" * 32,
        1,
    )
    holder_b.transact(ledger.functions.submitClaim(pending))
    validator = ChainClient(url, anvil_account(VALIDATOR))
    seat = validator.contract("WorkLedger", protocol.ledger.address)
    validator.transact(
        seat.functions.stake(), value=seat.functions.parameters().call()[8]
    )  # minValidatorStake
    validator.transact(seat.functions.registerValidator(ETH_MODEL, 2))
    reader = Protocol.load(ChainClient(url), deployments)
    chain = WebChain(url, creator.chain_id, deployments, tmp / "store", reader, token.address)
    chain.pay(ETH_MODEL, 7 * 10**15 + 3, b"\x01" * 32)
    chain.pay(ETH_MODEL, 2 * 10**15, b"\x02" * 32)
    chain.pay(TOKEN_MODEL, 5 * ETHER, b"\x03" * 32)
    return chain


def serve_web(chain: WebChain, log_dir: Path, *gateways: str, port: int = 0) -> tuple[LocalProcess, str]:
    """`pm web serve` on `port` (0: a free one); (process, base URL) once it listens."""
    port = port or free_port()
    args = [
        "web",
        "serve",
        "--port",
        str(port),
        "--rpc-url",
        chain.url,
        "--deployments",
        str(chain.deployments),
    ]
    for gateway in gateways:
        args += ["--gateway", gateway]
    process = spawn_pm(f"web-{port}", args, log_dir)
    process.wait_for(r"listening on http://", timeout=60)
    return process, f"http://127.0.0.1:{port}/"


def connect(page: Page) -> None:
    """Connect the test wallet from the wallet bar."""
    page.get_by_role("button", name="Connect Test Wallet").click()
    expect(page.locator(".wallet-bar")).to_contain_text("Test Wallet:")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_keyboard_reachable(page: Page) -> None:
    """Tab walks through every enabled interactive element, and each one has an accessible name."""
    elements = page.evaluate(
        """() => {
          const name = (el) => (el.getAttribute('aria-label')
            || (el.labels && el.labels[0] && el.labels[0].textContent)
            || el.textContent || '').trim();
          const selector = 'a[href], button:not([disabled]), input, select, textarea';
          const all = [...document.querySelectorAll(selector)].filter((el) => el.offsetParent !== null);
          all.forEach((el, i) => el.setAttribute('data-kb', String(i)));
          return all.map((el) => ({ id: el.dataset.kb, tag: el.tagName, name: name(el) }));
        }"""
    )
    unnamed = [element for element in elements if not element["name"]]
    assert not unnamed, f"interactive elements without an accessible name: {unnamed}"
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    reached = set()
    for _ in range(len(elements) + 5):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("() => document.activeElement && document.activeElement.dataset.kb"))
    missing = [element for element in elements if element["id"] not in reached]
    assert not missing, f"not reachable with Tab: {missing}"
