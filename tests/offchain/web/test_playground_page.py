"""The customer's playground against real gateways: three on-chain stage-worker processes serve model
3 (ETH, created for this module so that they are its stages' first members); model 2 (ERC-20) has a
gateway but no workers. Both gateways run with the operator's key (the operator set them with
setGateway). Quote, pay from the wallet, read the completion; a failure after payment keeps the
ticket, and a retry redeems it without paying again."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from chain_testkit import anvil_account, free_port
from playwright.sync_api import expect
from web_testkit import (
    CREATOR,
    CUSTOMER,
    ETHER,
    OPERATOR,
    SPEC,
    TOKEN_MODEL,
    assert_keyboard_reachable,
    connect,
    screenshot,
    serve_web,
)

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.model.generate import Sampling, complete, local_forward
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, chain_worker_args, spawn_pm

pytestmark = pytest.mark.slow

PRICE = 10**12  # wei (or token units) per token
PROMPT = "The assert statement"
SERVED_MODEL = 3  # the session chain holds models 1 and 2; this module creates the third
STAGE_WORKERS = (4, 8, 9)  # stage s of SERVED_MODEL is served by account STAGE_WORKERS[s]
# The retry has been answered: a completion is shown, or the Retry button is enabled again.
DONE = """() => document.querySelector("[data-field='completion']")
  || !document.querySelector('.tickets button:disabled')"""


@dataclass
class Stack:
    tmp: Path
    chain_args: list[str]
    procs: list[LocalProcess] = field(default_factory=list)
    workers: dict[int, LocalProcess] = field(default_factory=dict)
    bootstrap: str = ""
    gateways: dict[int, str] = field(default_factory=dict)
    web_url: str = ""

    def start_worker(self, stage: int) -> LocalProcess:
        """SERVED_MODEL's worker of `stage` (it stakes and joins on its first start, resumes after)."""
        peers = [self.bootstrap] if stage else []
        name = f"stage{stage}-{len(self.procs)}"
        args = chain_worker_args(SERVED_MODEL, stage, self.tmp / f"stage{stage}", self.chain_args, peers)
        env = {"PM_PRIVATE_KEY": anvil_account(STAGE_WORKERS[stage]).key.hex()}
        proc = spawn_pm(name, args, self.tmp, env=env)
        self.procs.append(proc)
        self.workers[stage] = proc
        return proc


def serve_model(web_chain) -> None:
    """SERVED_MODEL on the session chain, its operator's key a gateway of it and of the ERC-20 model."""
    creator = ChainClient(web_chain.url, anvil_account(CREATOR))
    protocol = Protocol.load(creator, web_chain.deployments)
    operator = ChainClient(web_chain.url, anvil_account(OPERATOR))
    created = create_model(
        protocol,
        EmbeddedStore(web_chain.store),
        SPEC,
        shares_per_work_unit=ETHER,
        revenue_asset="eth",
        operator=operator.address,
    )
    assert created.model.model_id == SERVED_MODEL
    registry = operator.contract("ModelRegistry", protocol.registry.address)
    for model_id in (SERVED_MODEL, TOKEN_MODEL):
        operator.transact(registry.functions.setGateway(model_id, operator.address, True))


@pytest.fixture(scope="module")
def stack(web_chain, tmp_path_factory):
    """Workers, a gateway per model (each allowing the web app's origin) and `pm web serve`."""
    chain_args = ["--rpc-url", web_chain.url, "--deployments", str(web_chain.deployments)]
    stack = Stack(tmp_path_factory.mktemp("playground"), [*chain_args, "--store", str(web_chain.store)])
    serve_model(web_chain)
    web_port = free_port()
    origin = f"http://127.0.0.1:{web_port}"
    try:
        stack.bootstrap = stack.start_worker(0).maddr()
        for stage in (1, 2):
            stack.start_worker(stage)
        for stage in (1, 2):
            stack.workers[stage].maddr()
        for model_id in (SERVED_MODEL, TOKEN_MODEL):
            port = free_port()
            args = [
                "gateway", "run", "--model", str(model_id), "--port", str(port),
                "--initial-peers", stack.bootstrap, "--state-dir", str(stack.tmp / f"gateway-{model_id}"),
                "--price-per-token-wei", str(PRICE), "--timeout", "10", "--allow-origin", origin,
                *stack.chain_args,
            ]  # fmt: skip
            env = {"PM_PRIVATE_KEY": anvil_account(OPERATOR).key.hex()}
            gateway = spawn_pm(f"gateway-{model_id}", args, stack.tmp, env=env)
            stack.procs.append(gateway)
            gateway.wait_for(r"listening on http://", timeout=120)
            stack.gateways[model_id] = f"http://127.0.0.1:{port}"
        web, stack.web_url = serve_web(web_chain, stack.tmp, *stack.gateways.values(), port=web_port)
        stack.procs.append(web)
        yield stack
    finally:
        for proc in stack.procs:
            proc.stop()


def fill_request(page, model_id: int, prompt: str, max_tokens: int) -> None:
    choice = page.locator("#play-model option", has_text=f"Model {model_id} at ").get_attribute("value")
    page.get_by_label("Model", exact=True).select_option(choice)
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label(re.compile("^Tokens to generate")).fill(str(max_tokens))
    page.get_by_role("button", name="Get a quote").click()


def single_process_completion(prompt: str, max_tokens: int) -> str:
    """What the seed weights complete in one process (in a thread: Playwright's loop owns this one);
    on-chain workers serve them as swarm round 1 (chain round 0)."""
    spec = load_spec(SPEC)
    local = local_forward(spec, train_single_process(spec, 0, model_id=SERVED_MODEL).states, [0, 0, 0])
    work = complete(local, spec, prompt, Sampling(max_tokens=max_tokens))
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result().text


def payments_by(web_chain, payer: str, after_block: int) -> list:
    event = web_chain.protocol.router.events.InferencePaid()
    logs = event.get_logs(from_block=after_block + 1, argument_filters={"payer": payer})
    return [log["args"] for log in logs]


def test_quote_pay_and_read_the_completion(open_page, stack, web_chain):
    customer = anvil_account(CUSTOMER).address
    start = web_chain.protocol.client.w3.eth.block_number
    page = open_page(f"{stack.web_url}#/playground", account=CUSTOMER)
    connect(page)
    fill_request(page, SERVED_MODEL, PROMPT, 4)
    amount = PRICE * (len(PROMPT) + 4)
    expect(page.locator("[data-field='quote-amount']")).to_have_attribute("data-raw", str(amount))
    page.get_by_role("button", name=re.compile("^Pay .* and run$")).click()

    expected = single_process_completion(PROMPT, 4)
    expect(page.locator("[data-field='completion']")).to_have_text(expected, timeout=60_000)
    expect(page.locator("p.status.done")).to_have_text("Completed by model 3 with the weights of round 1.")
    (paid,) = payments_by(web_chain, customer, start)
    assert paid["modelId"] == SERVED_MODEL and paid["amount"] == amount
    screenshot(page, "playground")
    assert_keyboard_reachable(page)


def test_a_failure_after_payment_keeps_the_ticket_and_a_retry_redeems_it(open_page, stack, web_chain):
    customer = anvil_account(CUSTOMER).address
    start = web_chain.protocol.client.w3.eth.block_number
    w3 = web_chain.protocol.client.w3
    stack.workers[2].kill9()
    page = open_page(f"{stack.web_url}#/playground", account=CUSTOMER, http_errors=(503,))
    connect(page)
    fill_request(page, SERVED_MODEL, PROMPT, 3)
    nonce = w3.eth.get_transaction_count(customer)
    page.get_by_role("button", name=re.compile("^Pay .* and run$")).click()
    status = page.get_by_role("alert")
    expect(status).to_contain_text("Your payment is kept: Retry redeems the same ticket", timeout=90_000)
    retry = page.get_by_role("button", name=re.compile("^Retry request 0x"))
    expect(retry).to_have_count(1)
    screenshot(page, "playground-retry")

    stack.start_worker(2).maddr()
    deadline = time.monotonic() + 120
    completion = page.locator("[data-field='completion']")
    while not completion.count():
        assert time.monotonic() < deadline, "the retried ticket was never served"
        retry.click()
        page.wait_for_function(DONE, timeout=90_000)  # answered: a completion or the failure again
        if not completion.count():
            time.sleep(5)  # the gateway's Retry-After
    expect(retry).to_have_count(0)
    assert w3.eth.get_transaction_count(customer) == nonce + 1  # paid once, retried for free
    assert len(payments_by(web_chain, customer, start)) == 1


def test_an_erc20_model_is_approved_then_paid_and_its_ticket_survives_a_reload(open_page, stack, web_chain):
    """Model 2 has no workers: its gateway answers 503 after the payment; the ticket stays listed,
    also after a reload, so it can be redeemed once the model is served."""
    customer = anvil_account(CUSTOMER).address
    start = web_chain.protocol.client.w3.eth.block_number
    page = open_page(f"{stack.web_url}#/playground", account=CUSTOMER, http_errors=(503,))
    connect(page)
    fill_request(page, TOKEN_MODEL, PROMPT, 2)
    amount = PRICE * (len(PROMPT) + 2)
    expect(page.locator("[data-field='quote-amount']")).to_have_text(f"0.{amount:018d}".rstrip("0") + " REV")
    page.get_by_role("button", name=re.compile("^Pay .* and run$")).click()
    expect(page.get_by_role("alert")).to_contain_text("Your payment is kept", timeout=90_000)
    sent = page.evaluate("testWallet.requests('eth_sendTransaction')")
    assert [tx[0]["to"].lower() for tx in sent] == [
        web_chain.token.lower(),
        web_chain.protocol.router.address.lower(),
    ]
    (paid,) = payments_by(web_chain, customer, start)
    assert paid["modelId"] == TOKEN_MODEL and paid["amount"] == amount
    page.reload()
    expect(
        page.get_by_role("button", name=f"Retry request 0x{paid['requestId'].hex()} without paying again")
    ).to_be_visible()


def test_the_gateway_allows_only_the_web_apps_origin(stack):
    origin = stack.web_url.rstrip("/")
    gateway = stack.gateways[SERVED_MODEL]
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(f"{gateway}/v1/quote", headers={"Origin": origin, **preflight})
    assert allowed.status_code == 204 and allowed.headers["Access-Control-Allow-Origin"] == origin
    assert allowed.headers["Access-Control-Allow-Headers"] == "Content-Type"
    other = httpx.options(f"{gateway}/v1/quote", headers={"Origin": "http://127.0.0.2:1", **preflight})
    assert other.status_code == 405 and "Access-Control-Allow-Origin" not in other.headers
    unpaid = httpx.post(
        f"{gateway}/v1/completions",
        json={"prompt": "x", "max_tokens": 1, "ticket": "0x" + "11" * 32},
        headers={"Origin": origin},
    )
    assert unpaid.status_code == 402 and unpaid.headers["Access-Control-Allow-Origin"] == origin
    assert (
        "Access-Control-Allow-Origin"
        not in httpx.get(f"{gateway}/healthz", headers={"Origin": origin}).headers
    )
