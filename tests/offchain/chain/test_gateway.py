"""Paid inference end to end: a real anvil with the protocol deployed by scripts/deploy.py, three
real on-chain stage-worker processes on loopback (members that joined with their libp2p peer ids),
a real `pm gateway run` process (a gateway of the model: the operator set it with setGateway),
customers paying with `pm infer` or by hand, and holders claiming with `pm claim`.

One stack per module (the workers and the gateway take seconds to start), so the tests run in
file order and share the chain: the revenue test at the end reads every payment made before it
from the chain's events and checks each holder's claim against that history."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from chain_testkit import REPO, anvil_account, deploy, earn_shares, free_port
from web3.contract import Contract
from web3.logs import DISCARD

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.model.generate import Sampling, complete, local_forward
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, chain_worker_args, spawn_pm

pytestmark = pytest.mark.slow

ANVIL_ARGS = ("--accounts", "13")  # accounts 10..12 serve the stages
ETHER = 10**18
PRICE = 10**12  # wei per token
SPEC = REPO / "specs" / "tiny.json"
CUSTOMER, ERC20_CUSTOMER, OPERATOR, BYSTANDER = 5, 7, 6, 8
WORKER_A, WORKER_B, BUYER = 2, 3, 4
STAGE_WORKERS = (10, 11, 12)  # stage s is served by account STAGE_WORKERS[s]
GATEWAY = OPERATOR  # the operator runs the gateway it names
PROMPT = "The assert statement"


@dataclass
class Stack:
    """The module's processes and chain handles."""

    tmp: Path
    url: str
    deployments: Path
    workers: dict[int, LocalProcess] = field(default_factory=dict)
    procs: list[LocalProcess] = field(default_factory=list)
    bootstrap: str = ""
    protocol: Protocol | None = None
    token: Contract | None = None
    gateway: LocalProcess | None = None
    gateway_url: str = ""

    @property
    def store(self) -> Path:
        return self.tmp / "store"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PM_RPC_URL": self.url, "PM_DEPLOYMENTS": str(self.deployments)}

    def chain_args(self) -> list[str]:
        return ["--rpc-url", self.url, "--deployments", str(self.deployments), "--store", str(self.store)]

    def start_worker(self, stage: int) -> LocalProcess:
        """Model 1's worker of `stage` (it stakes and joins on its first start, resumes after)."""
        peers = [self.bootstrap] if stage else []
        args = chain_worker_args(1, stage, self.tmp / f"stage{stage}", self.chain_args(), peers)
        env = {"PM_PRIVATE_KEY": anvil_account(STAGE_WORKERS[stage]).key.hex()}
        proc = spawn_pm(f"stage{stage}-{len(self.procs)}", args, self.tmp, env=env)
        self.procs.append(proc)
        self.workers[stage] = proc
        return proc

    def start_gateway(self, model_id: int, name: str, port: int) -> LocalProcess:
        args = [
            "gateway", "run", "--model", str(model_id), "--port", str(port),
            "--initial-peers", self.bootstrap, "--state-dir", str(self.tmp / f"gateway-{model_id}"),
            "--price-per-token-wei", str(PRICE), "--timeout", "10", *self.chain_args(),
        ]  # fmt: skip
        env = {"PM_PRIVATE_KEY": anvil_account(GATEWAY).key.hex()}
        proc = spawn_pm(name, args, self.tmp, env=env)
        self.procs.append(proc)
        proc.wait_for(r"listening on http://", timeout=120)
        return proc


def pm(*args: str, account: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "PM_PRIVATE_KEY": anvil_account(account).key.hex()}
    command = [sys.executable, "-m", "offchain.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=REPO)


@pytest.fixture(scope="module")
def stack(deployed, tmp_path_factory):
    """Model 1 (ETH, operator = account 6) served by 3 on-chain workers and a gateway; model 2 (an
    ERC-20, no workers); holders: A (3 units) and B (1 unit) in model 1, A (2 units) in model 2. The
    workers join first, so each is its stage's first member and creates the stage key; the holders
    join after them. Every process is stopped at the end, in parallel."""
    url, deployments = deployed
    stack = Stack(tmp_path_factory.mktemp("gateway"), url, deployments)
    creator = ChainClient(url, anvil_account(1))
    stack.protocol = protocol = Protocol.load(creator, deployments)
    operator = ChainClient(url, anvil_account(OPERATOR))
    store = EmbeddedStore(stack.store)
    create_model(
        protocol, store, SPEC, shares_per_work_unit=ETHER, revenue_asset="eth", operator=operator.address
    )
    stack.token = deploy(creator, "MockERC20", "Revenue", "REV")
    creator.transact(stack.token.functions.mint(anvil_account(ERC20_CUSTOMER).address, 10**24))
    asset = stack.token.address
    create_model(
        protocol, store, SPEC, shares_per_work_unit=ETHER, revenue_asset=asset, operator=operator.address
    )
    registry = operator.contract("ModelRegistry", protocol.registry.address)
    for model_id in (1, 2):
        operator.transact(registry.functions.setGateway(model_id, anvil_account(GATEWAY).address, True))
    try:
        stack.bootstrap = stack.start_worker(0).maddr()
        for stage in (1, 2):
            stack.start_worker(stage)
        for stage in (1, 2):
            stack.workers[stage].maddr()
        worker_a, worker_b = (ChainClient(url, anvil_account(i)) for i in (WORKER_A, WORKER_B))
        earn_shares(protocol, worker_a, 1, 0, 3)
        earn_shares(protocol, worker_b, 1, 1, 1)
        earn_shares(protocol, worker_a, 2, 0, 2)
        port = free_port()
        stack.gateway = stack.start_gateway(1, "gateway", port)
        stack.gateway_url = f"http://127.0.0.1:{port}"
        yield stack
    finally:
        for proc in stack.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in stack.procs:
            proc.stop()


def post(stack: Stack, path: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return httpx.post(stack.gateway_url + path, content=content, headers=headers, timeout=120)


def pay(stack: Stack, quote: dict, *, account: int = CUSTOMER, model_id: int = 1, amount: int | None = None):
    """payForInference for the quote's request id, in ETH (model 1) or the ERC-20 (model 2)."""
    payer = ChainClient(stack.url, anvil_account(account))
    router = payer.contract("RevenueRouter", stack.protocol.router.address)
    amount = int(quote["amount"]) if amount is None else amount
    request_id = bytes.fromhex(quote["requestId"][2:])
    if model_id == 1:
        return payer.transact(router.functions.payForInference(model_id, request_id, amount), value=amount)
    token = payer.contract("IERC20", stack.token.address)
    payer.transact(token.functions.approve(router.address, amount))
    return payer.transact(router.functions.payForInference(model_id, request_id, amount))


def quote_and_pay(stack: Stack, prompt: str = PROMPT, max_tokens: int = 4) -> dict:
    quote = post(stack, "/v1/quote", {"prompt": prompt, "max_tokens": max_tokens}).json()
    pay(stack, quote)
    return quote


def completion_body(quote: dict, prompt: str = PROMPT) -> dict:
    return {"prompt": prompt, "max_tokens": quote["max_tokens"], "ticket": quote["ticket"]}


def test_models_and_health(stack):
    assert httpx.get(stack.gateway_url + "/healthz").json() == {"status": "ok", "model": 1}
    (model,) = httpx.get(stack.gateway_url + "/v1/models").json()["data"]
    registry = stack.protocol.model(1)
    assert model["id"] == 1 and model["spec_cid"] == registry.spec_cid
    assert model["spec_digest"] == load_spec(SPEC).digest()
    assert model["price_per_token"] == str(PRICE) and model["revenue_symbol"] == "ETH"
    assert model["router"] == stack.protocol.router.address and model["max_tokens"] == 63


def test_pm_infer_pays_and_gets_the_single_process_completion(stack):
    result = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "6", "--gateway", stack.gateway_url,
        "--json", account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    spec = load_spec(SPEC)
    seed = train_single_process(spec, 0, model_id=1)
    local = local_forward(spec, seed.states, [0, 0, 0])
    expected = asyncio.run(complete(local, spec, PROMPT, Sampling(max_tokens=6)))
    # On-chain workers serve the state of chain round R as swarm round R + 1: the seed is round 1.
    assert out["text"] == expected.text and out["rounds"] == [1, 1, 1]
    assert out["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 6}
    receipt = stack.protocol.client.w3.eth.get_transaction_receipt(out["tx"])
    (paid,) = stack.protocol.router.events.InferencePaid().process_receipt(receipt, errors=DISCARD)
    assert "0x" + paid["args"]["requestId"].hex() == out["requestId"]
    assert paid["args"]["amount"] == int(out["amount_wei"]) == PRICE * (len(PROMPT) + 6)
    assert paid["args"]["payer"] == anvil_account(CUSTOMER).address
    text = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "2", "--gateway", stack.gateway_url,
        account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "weights of round 1, 2 tokens; paid 0.000022 ETH, tx 0x" in text.stdout


def test_a_paid_request_is_served_once(stack):
    quote = quote_and_pay(stack)
    first = post(stack, "/v1/completions", completion_body(quote))
    assert first.status_code == 200, first.text
    assert first.json()["requestId"] == quote["requestId"]
    replay = post(stack, "/v1/completions", completion_body(quote))
    assert replay.status_code == 409
    assert replay.json()["error"] == f"request {quote['requestId']} was already served"
    again = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "4", "--ticket", quote["ticket"],
        "--gateway", stack.gateway_url, account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"the gateway refused the request: 409 request {quote['requestId']} was already served"
    )


def test_unpaid_underpaid_and_other_model_payments_get_402(stack):
    quote = post(stack, "/v1/quote", {"prompt": PROMPT, "max_tokens": 4}).json()
    assert quote["amount"] == str(PRICE * (len(PROMPT) + 4))
    unpaid = post(stack, "/v1/completions", completion_body(quote))
    assert unpaid.status_code == 402
    assert unpaid.json()["quote"]["requestId"] == quote["requestId"]
    assert unpaid.json()["quote"]["amount"] == quote["amount"]

    pay(stack, quote, amount=int(quote["amount"]) - 1)
    underpaid = post(stack, "/v1/completions", completion_body(quote))
    assert underpaid.status_code == 402 and underpaid.json()["paid"] == str(int(quote["amount"]) - 1)
    assert underpaid.json()["quote"]["requestId"] != quote["requestId"]  # a request id pays once
    smaller = {"prompt": PROMPT, "max_tokens": 3, "ticket": quote["ticket"]}
    assert post(stack, "/v1/completions", smaller).status_code == 200  # what it paid for still works

    elsewhere = post(stack, "/v1/quote", {"prompt": PROMPT, "max_tokens": 4}).json()
    pay(stack, elsewhere, account=ERC20_CUSTOMER, model_id=2)
    other_model = post(stack, "/v1/completions", completion_body(elsewhere))
    assert other_model.status_code == 402
    assert other_model.json()["error"] == f"request {elsewhere['requestId']} paid model 2, not model 1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the body is not valid JSON"),
        (b"[1, 2]", 400, "the body must be a JSON object"),
        ({"model": 9, "prompt": "x", "max_tokens": 1}, 404, "unknown model 9: this gateway serves model 1"),
        ({"prompt": "x", "max_tokens": 0}, 422, "max_tokens: Input should be greater than or equal to 1"),
        ({"prompt": "x", "max_tokens": 10**30}, 422, "exceeds this gateway's limit of 63"),
        ({"prompt": "x" * 60, "max_tokens": 10}, 422, "exceeds the context window of 64 tokens"),
        ({"prompt": "", "max_tokens": 1}, 422, "the prompt is empty"),
        ({"prompt": 5, "max_tokens": 1}, 422, "prompt: Input should be a valid string"),
        ({"prompt": "x", "max_tokens": "3"}, 422, "max_tokens: Input should be a valid integer"),
        ({"prompt": "x", "max_tokens": 1, "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_quotes_get_4xx_json(stack, body, status, message):
    response = post(stack, "/v1/quote", body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_bad_completions_and_routes_get_4xx_json(stack):
    ticket = "0x" + "11" * 32
    cases = [
        ({"prompt": "x", "max_tokens": 1}, 422, "ticket: Field required"),
        ({"prompt": "x", "max_tokens": 1, "ticket": "0x1234"}, 422, "ticket must be 0x followed by 64 hex"),
        ({"prompt": "x", "max_tokens": 1, "ticket": ticket, "temperature": -1}, 422, "temperature"),
        ({"prompt": "x", "max_tokens": 1, "ticket": ticket, "temperature": 1, "top_k": 0}, 422, "top_k"),
        (
            {"prompt": "x", "max_tokens": 1, "ticket": ticket, "requestId": "0x00"},
            422,
            "is not the request id",
        ),
    ]
    for body, status, message in cases:
        response = post(stack, "/v1/completions", body)
        assert response.status_code == status, body
        assert message in response.json()["error"], response.json()
    unknown = httpx.get(stack.gateway_url + "/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"] == "Not Found"
    wrong_method = httpx.get(stack.gateway_url + "/v1/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "Method Not Allowed"
    too_big = post(stack, "/v1/quote", b'{"prompt": "' + b"x" * 100_000 + b'", "max_tokens": 1}')
    assert too_big.status_code == 413 and "error" in too_big.json()
    assert "Traceback" not in stack.gateway.text()


def test_cli_mistakes_are_one_line_and_nothing_is_paid(stack):
    customer = anvil_account(CUSTOMER).address
    nonce = stack.protocol.client.w3.eth.get_transaction_count(customer)
    infer = ["infer", "--model", "1", "--prompt", PROMPT, "--gateway"]
    too_dear = pm(*infer, stack.gateway_url, "--max-amount-wei", "1", account=CUSTOMER, env=stack.env)
    amount = PRICE * (len(PROMPT) + 16)
    assert (too_dear.returncode, too_dear.stderr.strip()) == (
        1,
        f"the gateway asks {amount}, more than --max-amount {1}",
    )
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = pm(*infer, closed, account=CUSTOMER, env=stack.env)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"cannot reach the gateway at {closed}: ConnectError")
    assert stack.protocol.client.w3.eth.get_transaction_count(customer) == nonce
    no_peers = pm("gateway", "run", "--model", "1", account=CUSTOMER, env=stack.env)
    assert no_peers.returncode == 1
    assert no_peers.stderr.strip() == (
        "pm gateway run needs --initial-peers: the multiaddr a stage worker printed"
    )


def test_restart_keeps_served_ids_and_redeems_tickets_paid_before(stack):
    served = quote_and_pay(stack)
    assert post(stack, "/v1/completions", completion_body(served)).status_code == 200
    paid_not_served = quote_and_pay(stack)
    port = int(stack.gateway_url.rsplit(":", 1)[1])
    stack.gateway.stop()
    assert stack.gateway.popen.returncode == 0, stack.gateway.text()[-2000:]
    stack.gateway = stack.start_gateway(1, "gateway-restarted", port)
    replay = post(stack, "/v1/completions", completion_body(served))
    assert replay.status_code == 409
    redeemed = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "4", "--ticket",
        paid_not_served["ticket"], "--gateway", stack.gateway_url, "--json", account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert redeemed.returncode == 0, redeemed.stderr
    out = json.loads(redeemed.stdout)
    assert out["requestId"] == paid_not_served["requestId"] and out["tx"] is None


def test_worker_killed_mid_request_gets_503_and_the_same_ticket_is_served_later(stack):
    prompt = "x" * 4
    quote = quote_and_pay(stack, prompt, max_tokens=59)
    replies: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: replies.append(post(stack, "/v1/completions", completion_body(quote, prompt)))
    )
    request.start()
    time.sleep(1.0)
    # Stage 2: stages 0 and 1 hold the holders' placeholder checkpoints (earn_shares), which no
    # restarted worker can fetch and start from.
    stack.workers[2].kill9()
    request.join(timeout=120)
    (reply,) = replies
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"] == "5" and "retry with the same ticket" in reply.json()["error"]

    stack.start_worker(2).maddr()
    deadline = time.monotonic() + 90
    while True:
        started = time.monotonic()
        retry = post(stack, "/v1/completions", completion_body(quote, prompt))
        if retry.status_code != 503:
            break
        assert time.monotonic() < deadline, retry.text
        time.sleep(float(retry.headers["Retry-After"]))
    assert retry.status_code == 200, retry.text
    assert time.monotonic() - started > 1.0  # the request takes longer than the kill's delay
    assert len(retry.json()["tokens"]) == 59
    assert post(stack, "/v1/completions", completion_body(quote, prompt)).status_code == 409


def test_erc20_payment_through_pm_infer_and_a_failed_gateway_leaves_a_redeemable_ticket(stack):
    """Model 2 pays in an ERC-20 and has no stage workers: `pm infer` approves, pays, gets 503s and
    exits with the ticket to redeem later; the payment is on-chain and its holder claims it."""
    port = free_port()
    stack.start_gateway(2, "gateway-model2", port)
    shares = stack.protocol.shares(stack.protocol.model(2))
    revenue_before = shares.functions.totalRevenue().call()
    result = pm(
        "infer", "--model", "2", "--prompt", PROMPT, "--max-tokens", "4",
        "--gateway", f"http://127.0.0.1:{port}", "--wait", "0", account=ERC20_CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the gateway did not serve the paid request: 503" in result.stderr
    ticket = result.stderr.split("--ticket ")[1].split()[0]
    amount = PRICE * (len(PROMPT) + 4)
    assert shares.functions.totalRevenue().call() - revenue_before == to_holders(stack.protocol, amount)
    unserved = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 4, "ticket": ticket},
        timeout=60,
    )
    assert unserved.status_code == 503  # paid, so not 402: the ticket stays redeemable

    holder = anvil_account(WORKER_A).address  # model 2's only holder
    before = stack.token.functions.balanceOf(holder).call()
    claimed = pm("claim", "--model", "2", "--json", account=WORKER_A, env=stack.env)
    assert claimed.returncode == 0, claimed.stderr
    (record,) = json.loads(claimed.stdout)["claims"]
    received = stack.token.functions.balanceOf(holder).call() - before
    assert received == int(record["amount_wei"])
    total = shares.functions.totalRevenue().call()
    assert total - 1 <= received <= total


def to_holders(protocol: Protocol, amount: int) -> int:
    router = protocol.router.functions
    return (
        amount
        - amount * router.protocolFeeBps().call() // 10_000
        - amount * router.operatorFeeBps().call() // 10_000
    )


def test_revenue_reaches_every_holder_pro_rata_and_the_fees_their_receivers(stack):
    """Two more paid requests, A sells half its shares to a buyer, two more; then each holder's
    `pm claim` must equal its pro-rata share of every model-1 payment made in this module (from
    the InferencePaid events and the balances at each payment's block), within 1 wei."""
    protocol, w3 = stack.protocol, stack.protocol.client.w3
    for _ in range(2):
        assert post(stack, "/v1/completions", completion_body(quote_and_pay(stack))).status_code == 200
    seller = ChainClient(stack.url, anvil_account(WORKER_A))
    shares_of_a = seller.contract("ModelShares", protocol.model(1).shares)
    seller.transact(shares_of_a.functions.transfer(anvil_account(BUYER).address, 3 * ETHER // 2))
    for _ in range(2):
        assert post(stack, "/v1/completions", completion_body(quote_and_pay(stack))).status_code == 200

    shares = protocol.shares(protocol.model(1))
    payments = protocol.router.events.InferencePaid().get_logs(
        from_block=protocol.first_block(), argument_filters={"modelId": 1}
    )
    assert len(payments) >= 9
    holders = [anvil_account(i).address for i in (WORKER_A, WORKER_B, BUYER)]
    expected = dict.fromkeys(holders, Fraction(0))
    protocol_bps = protocol.router.functions.protocolFeeBps().call()
    operator_bps = protocol.router.functions.operatorFeeBps().call()
    fees = {"protocol": 0, "operator": 0}
    for payment in payments:
        args, block = payment["args"], payment["blockNumber"]
        assert args["toHolders"] == to_holders(protocol, args["amount"])
        fees["protocol"] += args["amount"] * protocol_bps // 10_000
        fees["operator"] += args["amount"] * operator_bps // 10_000
        supply = shares.functions.totalSupply().call(block_identifier=block)
        for holder in holders:
            balance = shares.functions.balanceOf(holder).call(block_identifier=block)
            expected[holder] += Fraction(args["toHolders"] * balance, supply)

    for index, holder in zip((WORKER_A, WORKER_B, BUYER), holders, strict=True):
        before = w3.eth.get_balance(holder)
        result = pm("claim", "--model", "1", "--json", account=index, env=stack.env)
        assert result.returncode == 0, result.stderr
        (claimed,) = json.loads(result.stdout)["claims"]
        receipt = w3.eth.get_transaction_receipt(claimed["tx"])
        received = w3.eth.get_balance(holder) - before + receipt["gasUsed"] * receipt["effectiveGasPrice"]
        assert received == int(claimed["amount_wei"])
        assert abs(received - expected[holder]) <= 1, (holder, received, float(expected[holder]))

    assert list(protocol.router.functions.feesOwed(1).call()) == [fees["protocol"], fees["operator"]]
    bystander = ChainClient(stack.url, anvil_account(BYSTANDER))
    router = bystander.contract("RevenueRouter", protocol.router.address)
    treasury, operator = protocol.router.functions.treasury().call(), protocol.model(1).operator
    balances = {address: w3.eth.get_balance(address) for address in (treasury, operator)}
    bystander.transact(router.functions.withdrawProtocolFees(1))
    bystander.transact(router.functions.withdrawOperatorFees(1))
    assert w3.eth.get_balance(treasury) - balances[treasury] == fees["protocol"]
    assert w3.eth.get_balance(operator) - balances[operator] == fees["operator"]
    assert list(protocol.router.functions.feesOwed(1).call()) == [0, 0]
