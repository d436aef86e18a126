"""Paid inference end to end: a real anvil with the protocol deployed by scripts/deploy.py, three
real on-chain stage-worker processes on loopback (members that joined with their libp2p peer ids),
a real `pm gateway run` process (a gateway of the model: the operator set it with setGateway),
customers paying with `pm infer`, by hand, or through the official `openai` client, and holders
claiming with `pm claim`.

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
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import httpx
import openai
import pytest
from chain_testkit import REPO, anvil_account, deploy, earn_shares, free_port
from web3.contract import Contract
from web3.logs import DISCARD

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.crash import CRASH_ENV
from offchain.model.chat import ChatTemplate, Message
from offchain.model.generate import LocalPipeline, Sampling, complete
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import shipped_tokenizer
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.client import call
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.local import LocalProcess, chain_worker_args, spawn_pm
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node

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
TOKENIZER = shipped_tokenizer(load_spec(SPEC))
PROMPT_TOKENS = len(TOKENIZER.encode(PROMPT).ids)
FINALIZED = [1, 1, 0]  # checkpointOf(1, stage).round once earn_shares finalized stages 0 and 1


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

    def start_gateway(
        self, model_id: int, name: str, port: int, timeout: int = 60, env: dict[str, str] | None = None
    ) -> LocalProcess:
        args = [
            "gateway", "run", "--model", str(model_id), "--port", str(port),
            "--initial-peers", self.bootstrap, "--state-dir", str(self.tmp / f"gateway-{model_id}"),
            "--price-per-token-wei", str(PRICE), "--timeout", str(timeout), *self.chain_args(),
        ]  # fmt: skip
        env = {"PM_PRIVATE_KEY": anvil_account(GATEWAY).key.hex(), **(env or {})}
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


@pytest.fixture(scope="module")
def local():
    """Every stage in one process on the weights the workers serve (the spec's seed, model 1)."""
    spec = load_spec(SPEC)
    return LocalPipeline(spec, train_single_process(spec, 0, model_id=1).states, [0, 0, 0])


def expected(local, ids: list[int], sampling: Sampling):
    return asyncio.run(complete(local, TOKENIZER, ids, sampling))


def post(stack: Stack, path: str, body: object, ticket: str | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if ticket is not None:
        headers["Authorization"] = f"Bearer {ticket}"
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


def quote_and_pay(stack: Stack, body: dict | None = None) -> dict:
    """A quote for `body` (default: PROMPT, 4 tokens), paid on-chain; returns the quote."""
    quote = post(stack, "/v1/quote", body or {"prompt": PROMPT, "max_tokens": 4}).json()
    pay(stack, quote)
    return quote


def completion_body(quote: dict, prompt: str = PROMPT) -> dict:
    return {"model": "1", "prompt": prompt, "max_tokens": quote["max_tokens"]}


def client(stack: Stack, ticket: str) -> openai.OpenAI:
    """The official OpenAI client with the ticket as its API key (no retries: a 409 must show)."""
    return openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=ticket, max_retries=0, timeout=120)


def stage_caches(stack: Stack) -> list[tuple[int, int]]:
    """Per live stage worker, (sessions, cached positions) from its `info` RPC, once every
    completion's cache has drained (it is freed when its stream ends, a moment after the HTTP
    answer). A running gateway keeps one spare session per stage open for its next completion
    (offchain/swarm/inference.py): at most one session, caching nothing, is all that may remain."""

    async def read() -> list[tuple[int, int]]:
        node = await start_node(NetworkConfig(initial_peers=(stack.bootstrap,)), client_mode=True)
        spec = load_spec(SPEC)
        driver = Driver(DriverConfig(spec, Identity.from_key(b"\x01" * 32), model_id=1), node)
        request = {"model": spec.digest(), "model_id": 1}
        try:
            deadline = time.monotonic() + 30
            while True:
                counts = []
                for stage in range(3):
                    for replica in await driver.discover(stage):
                        reply = await call(node.p2p, replica.peer_id, "info", request, timeout=10)
                        counts.append((reply["sessions"], reply["cached_tokens"]))
                if drained(counts) or time.monotonic() > deadline:
                    return counts
                await asyncio.sleep(0.5)
        finally:
            await shutdown_node(node)

    return asyncio.run(read())


def drained(counts: list[tuple[int, int]]) -> bool:
    """No stage caches anything, and each holds at most the gateway's spare session."""
    return all(sessions <= 1 and cached == 0 for sessions, cached in counts)


def assert_caches_freed(stack: Stack) -> None:
    counts = stage_caches(stack)
    assert len(counts) == 3 and drained(counts), counts


def test_models_and_health(stack):
    assert httpx.get(stack.gateway_url + "/healthz").json() == {"status": "ok", "model": "1"}
    models = client(stack, "0x" + "00" * 32).models
    (model,) = models.list().data
    registry = stack.protocol.model(1)
    assert model.id == "1" and model.owned_by == registry.shares and model.spec_cid == registry.spec_cid
    assert model.spec_digest == load_spec(SPEC).digest() and model.context_length == 64
    assert model.price_per_token == str(PRICE) and model.revenue_symbol == "ETH"
    assert model.router == stack.protocol.router.address and model.max_tokens == 63
    assert model.rounds == FINALIZED and model.round == 0
    assert models.retrieve("1").id == "1"
    with pytest.raises(openai.NotFoundError, match="unknown model '9'"):
        models.retrieve("9")


def test_openai_client_completion_chat_and_stream_are_paid_and_match_one_process(stack, local):
    """Three requests, each quoted and paid on anvil, then made by the openai client: a greedy
    completion, a chat completion sampled with a seed (ticket in a header of its own), and a
    streamed completion; each equal, token for token, to one process running the same weights."""
    ids = TOKENIZER.encode(PROMPT).ids
    quote = quote_and_pay(stack, {"prompt": PROMPT, "max_tokens": 6})
    reply = client(stack, quote["ticket"]).completions.create(
        model="1", prompt=PROMPT, max_tokens=6, temperature=0
    )
    greedy = expected(local, ids, Sampling(6))
    (choice,) = reply.choices
    assert (
        choice.text == greedy.text
        and choice.token_ids == greedy.token_ids
        and choice.finish_reason == "length"
    )
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 6
    assert reply.request_id == quote["requestId"] and reply.amount == quote["amount"]
    assert reply.round == 0 and reply.rounds == FINALIZED and reply.object == "text_completion"

    messages = [{"role": "system", "content": "Py"}, {"role": "user", "content": "assert"}]
    chat_ids = ChatTemplate(TOKENIZER).prompt_ids([Message(**message) for message in messages])
    chat_quote = quote_and_pay(stack, {"messages": messages, "max_tokens": 8})
    assert chat_quote["prompt_tokens"] == len(chat_ids)
    chat_client = openai.OpenAI(
        base_url=stack.gateway_url + "/v1",
        api_key="not-a-ticket",
        default_headers={"X-Payment-Ticket": chat_quote["ticket"]},
        max_retries=0,
    )
    chat = chat_client.chat.completions.create(
        model="1", messages=messages, max_tokens=8, temperature=0.8, top_p=0.9, seed=5
    )
    sampled = expected(local, chat_ids, Sampling(8, temperature=0.8, top_p=0.9, seed=5))
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content == sampled.text
    assert chat.choices[0].token_ids == sampled.token_ids and chat.object == "chat.completion"

    stream_quote = quote_and_pay(stack, {"prompt": PROMPT, "max_tokens": 12})
    chunks = list(
        client(stack, stream_quote["ticket"]).completions.create(
            model="1",
            prompt=PROMPT,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = expected(local, ids, Sampling(12))
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == streamed.text and len(chunks) >= 3
    assert [
        token for chunk in chunks if chunk.choices for token in chunk.choices[0].token_ids
    ] == streamed.token_ids
    assert (
        chunks[-2].choices[0].finish_reason == "length" and chunks[-2].request_id == stream_quote["requestId"]
    )
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    assert_caches_freed(stack)

    for paid in (quote, chat_quote, stream_quote):
        replay = post(stack, "/v1/completions", completion_body(paid), paid["ticket"])
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "already_served"


def test_the_documented_openai_example_pays_and_streams_the_completion(stack, local):
    """docs/examples/openai_customer.py, as a customer would run it (docs/roles/customer.md)."""
    env = {**os.environ, "PM_GATEWAY": stack.gateway_url, "PM_RPC_URL": stack.url, "PM_MODEL": "1"}
    env["PM_PRIVATE_KEY"] = anvil_account(CUSTOMER).key.hex()
    example = REPO / "docs" / "examples" / "openai_customer.py"
    run = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    paid, text = run.stdout.split("\n", 1)
    assert paid.startswith(f"paid {PRICE * (PROMPT_TOKENS + 16)} wei in tx ")
    assert text == expected(local, TOKENIZER.encode(PROMPT).ids, Sampling(16)).text + "\n"


def test_pm_infer_pays_and_gets_the_single_process_completion(stack, local):
    result = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "6", "--gateway", stack.gateway_url,
        "--json", account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["text"] == expected(local, TOKENIZER.encode(PROMPT).ids, Sampling(6)).text
    assert out["rounds"] == FINALIZED and out["round"] == 0
    assert out["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": 6,
        "total_tokens": PROMPT_TOKENS + 6,
    }
    receipt = stack.protocol.client.w3.eth.get_transaction_receipt(out["tx"])
    (paid,) = stack.protocol.router.events.InferencePaid().process_receipt(receipt, errors=DISCARD)
    assert "0x" + paid["args"]["requestId"].hex() == out["requestId"]
    assert paid["args"]["amount"] == int(out["amount_wei"]) == PRICE * (PROMPT_TOKENS + 6)
    assert paid["args"]["payer"] == anvil_account(CUSTOMER).address
    text = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "2", "--gateway", stack.gateway_url,
        account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    paid_eth = PRICE * (PROMPT_TOKENS + 2) / 10**18
    assert f"weights of round 0, 2 tokens; paid {paid_eth:.6f} ETH, tx 0x" in text.stdout


def test_a_paid_request_is_served_once(stack):
    quote = quote_and_pay(stack)
    first = client(stack, quote["ticket"]).completions.create(model="1", prompt=PROMPT, max_tokens=4)
    assert first.request_id == quote["requestId"]
    with pytest.raises(openai.ConflictError, match=f"request {quote['requestId']} was already served"):
        client(stack, quote["ticket"]).completions.create(model="1", prompt=PROMPT, max_tokens=4)
    again = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "4", "--ticket", quote["ticket"],
        "--gateway", stack.gateway_url, account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"the gateway refused the request: 409 request {quote['requestId']} was already served"
    )


def test_one_ticket_redeemed_by_several_callers_at_once_is_served_once(stack):
    """Four callers present the same paid ticket at the same moment: one is served, the others get
    a 409 JSON error (being served, or already served if the first finished before they arrived)."""
    quote = quote_and_pay(stack)
    headers = {"Authorization": f"Bearer {quote['ticket']}"}

    async def redeem_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120) as http:
            calls = (
                http.post("/v1/completions", json=completion_body(quote), headers=headers) for _ in range(4)
            )
            return await asyncio.gather(*calls)

    replies = asyncio.run(redeem_at_once())
    assert sorted(reply.status_code for reply in replies) == [200, 409, 409, 409]
    for reply in replies:
        if reply.status_code == 409:
            error = reply.json()["error"]
            assert error["code"] == "already_served" and error["request_id"] == quote["requestId"]
    assert stack.gateway.text().count(f"served request {quote['requestId']}") == 1


def test_no_ticket_unpaid_underpaid_and_other_model_payments_get_402_with_a_quote(stack):
    body = completion_body({"max_tokens": 4})
    no_ticket = post(stack, "/v1/completions", body)
    assert no_ticket.status_code == 402 and no_ticket.json()["error"]["code"] == "unpaid"
    assert no_ticket.json()["error"]["quote"]["amount"] == str(PRICE * (PROMPT_TOKENS + 4))

    quote = post(stack, "/v1/quote", {"prompt": PROMPT, "max_tokens": 4}).json()
    assert quote["amount"] == str(PRICE * (PROMPT_TOKENS + 4))
    unpaid = post(stack, "/v1/completions", body, quote["ticket"])
    assert unpaid.status_code == 402
    error = unpaid.json()["error"]
    assert error["type"] == "payment_required" and error["code"] == "unpaid"
    assert error["quote"]["requestId"] == quote["requestId"] and error["quote"]["amount"] == quote["amount"]

    pay(stack, quote, amount=int(quote["amount"]) - 1)
    underpaid = post(stack, "/v1/completions", body, quote["ticket"])
    assert underpaid.status_code == 402 and underpaid.json()["error"]["paid"] == str(int(quote["amount"]) - 1)
    assert underpaid.json()["error"]["quote"]["requestId"] != quote["requestId"]  # a request id pays once
    smaller = {**body, "max_tokens": 3}
    assert (
        post(stack, "/v1/completions", smaller, quote["ticket"]).status_code == 200
    )  # what it paid for works

    elsewhere = post(stack, "/v1/quote", {"prompt": PROMPT, "max_tokens": 4}).json()
    pay(stack, elsewhere, account=ERC20_CUSTOMER, model_id=2)
    other_model = post(stack, "/v1/completions", body, elsewhere["ticket"])
    assert other_model.status_code == 402
    assert (
        other_model.json()["error"]["message"]
        == f"request {elsewhere['requestId']} paid model 2, not model 1"
    )


TICKET = "0x" + "11" * 32


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "message"),
    [
        ("/v1/completions", b"{not json", 400, None, "the body is not valid JSON"),
        ("/v1/completions", b"[1, 2]", 400, None, "the body must be a JSON object"),
        ("/v1/completions", {"model": "9", "prompt": "x"}, 404, "model", "unknown model '9'"),
        ("/v1/completions", {"prompt": "", "max_tokens": 1}, 400, None, "the prompt is empty"),
        (
            "/v1/completions",
            {"prompt": "x", "max_tokens": 0},
            400,
            "max_tokens",
            "greater than or equal to 1",
        ),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10**30}, 400, "max_tokens", "limit of 63"),
        ("/v1/completions", {"prompt": "x" * 60, "max_tokens": 10}, 400, None, "exceeds the context window"),
        (
            "/v1/completions",
            {"prompt": "x", "temperature": -1},
            400,
            "temperature",
            "greater than or equal to 0",
        ),
        ("/v1/completions", {"prompt": "x", "max_tokens": "3"}, 400, "max_tokens", "valid integer"),
        ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n", "Input should be 1"),
        ("/v1/completions", {"prompt": "x", "seed": -1}, 400, "seed", "greater than or equal to 0"),
        (
            "/v1/completions",
            {"prompt": "x", "logprobs": 2},
            400,
            "logprobs",
            "Extra inputs are not permitted",
        ),
        ("/v1/chat/completions", {"messages": []}, 400, "messages", "at least 1 item"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "system", "content": "hi"}]},
            400,
            "messages",
            "at least one message with role 'user'",
        ),
        ("/v1/quote", {"prompt": 5}, 400, "prompt", "valid string"),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(stack, path, body, status, param, message):
    response = post(stack, path, body, TICKET)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert message in error["message"] and error["param"] == param


def test_bad_tickets_and_routes_get_openai_shaped_errors(stack):
    malformed = post(stack, "/v1/completions", {"prompt": "x"}, "0x1234")
    assert malformed.status_code == 401 and malformed.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError, match="the prompt is empty"):
        client(stack, TICKET).completions.create(model="1", prompt="", max_tokens=1)
    unknown = httpx.get(stack.gateway_url + "/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "Not Found"
    wrong_method = httpx.get(stack.gateway_url + "/v1/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"] == "Method Not Allowed"
    too_big = post(stack, "/v1/quote", b'{"prompt": "' + b"x" * 100_000 + b'", "max_tokens": 1}')
    assert too_big.status_code == 413 and "message" in too_big.json()["error"]
    assert "Traceback" not in stack.gateway.text()


def test_cli_mistakes_are_one_line_and_nothing_is_paid(stack):
    customer = anvil_account(CUSTOMER).address
    nonce = stack.protocol.client.w3.eth.get_transaction_count(customer)
    infer = ["infer", "--model", "1", "--prompt", PROMPT, "--gateway"]
    too_dear = pm(*infer, stack.gateway_url, "--max-amount-wei", "1", account=CUSTOMER, env=stack.env)
    amount = PRICE * (PROMPT_TOKENS + 16)
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
    assert post(stack, "/v1/completions", completion_body(served), served["ticket"]).status_code == 200
    paid_not_served = quote_and_pay(stack)
    port = int(stack.gateway_url.rsplit(":", 1)[1])
    stack.gateway.stop()
    assert stack.gateway.popen.returncode == 0, stack.gateway.text()[-2000:]
    stack.gateway = stack.start_gateway(1, "gateway-restarted", port)
    replay = post(stack, "/v1/completions", completion_body(served), served["ticket"])
    assert replay.status_code == 409
    redeemed = pm(
        "infer", "--model", "1", "--prompt", PROMPT, "--max-tokens", "4", "--ticket",
        paid_not_served["ticket"], "--gateway", stack.gateway_url, "--json", account=CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert redeemed.returncode == 0, redeemed.stderr
    out = json.loads(redeemed.stdout)
    assert out["requestId"] == paid_not_served["requestId"] and out["tx"] is None


def test_a_client_leaving_mid_stream_frees_the_caches_and_spends_its_ticket(stack):
    quote = quote_and_pay(stack, {"prompt": "x", "max_tokens": 60})
    body = {**completion_body(quote, "x"), "stream": True}
    headers = {"Authorization": f"Bearer {quote['ticket']}"}
    with httpx.stream(
        "POST", stack.gateway_url + "/v1/completions", json=body, headers=headers, timeout=60
    ) as reply:
        assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
        first = next(reply.iter_lines())
        assert first.startswith("data: {") and json.loads(first[6:])["choices"][0]["token_ids"]
    # The connection is closed after one event: the gateway stops, every stage frees the cache.
    assert_caches_freed(stack)
    stack.gateway.wait_for(f"request {quote['requestId']}: the client left mid-stream", timeout=60)
    assert post(stack, "/v1/completions", body, quote["ticket"]).status_code == 409


def test_a_stage_restarted_mid_stream_is_re_prefilled_and_the_completion_unchanged(stack, local):
    prompt = "x" * 4
    quote = quote_and_pay(stack, {"prompt": prompt, "max_tokens": 59})
    body = {**completion_body(quote, prompt), "temperature": 0.9, "seed": 3, "stream": True}
    headers = {"Authorization": f"Bearer {quote['ticket']}"}
    tokens: list[int] = []
    killed = False
    with httpx.stream(
        "POST", stack.gateway_url + "/v1/completions", json=body, headers=headers, timeout=120
    ) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            tokens += event["choices"][0]["token_ids"] if event["choices"] else []
            if len(tokens) >= 5 and not killed:
                # Stage 2: stages 0 and 1 hold the holders' placeholder checkpoints (earn_shares),
                # which no restarted worker can fetch and start from.
                stack.workers[2].kill9()
                stack.start_worker(2)  # resumes from its state folder: the same weights
                killed = True
    assert (
        tokens
        == expected(local, TOKENIZER.encode(prompt).ids, Sampling(59, temperature=0.9, seed=3)).token_ids
    )
    assert "re-prefilling on a replica" in stack.gateway.text()
    assert_caches_freed(stack)
    assert post(stack, "/v1/completions", body, quote["ticket"]).status_code == 409


def test_a_gateway_killed_mid_request_leaves_the_ticket_redeemable_once(stack):
    """The gateway dies (as under kill -9) with a paid request claimed and its pipeline open
    (PM_TEST_CRASH_AT=mid-request): the customer's call fails, a restarted gateway serves the
    retried ticket once (the dead process's claim is no longer "being served"), then 409."""
    port = int(stack.gateway_url.rsplit(":", 1)[1])
    stack.gateway.stop()
    stack.gateway = stack.start_gateway(1, "gateway-crashing", port, env={CRASH_ENV: "mid-request"})
    quote = quote_and_pay(stack)
    with pytest.raises(httpx.TransportError):
        post(stack, "/v1/completions", completion_body(quote), quote["ticket"])
    assert stack.gateway.popen.wait(timeout=30) == 137
    stack.gateway = stack.start_gateway(1, "gateway-after-crash", port)
    assert "released 1 request(s) a previous gateway process left unfinished" in stack.gateway.text()
    retried = post(stack, "/v1/completions", completion_body(quote), quote["ticket"])
    assert retried.status_code == 200, retried.text
    assert retried.json()["request_id"] == quote["requestId"]
    again = post(stack, "/v1/completions", completion_body(quote), quote["ticket"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_served"


def test_erc20_payment_through_pm_infer_and_a_failed_gateway_leaves_a_redeemable_ticket(stack):
    """Model 2 pays in an ERC-20 and has no stage workers: `pm infer` approves, pays, gets 503s and
    exits with the ticket to redeem later; the payment is on-chain and its holder claims it."""
    port = free_port()
    stack.start_gateway(2, "gateway-model2", port, timeout=5)
    shares = stack.protocol.shares(stack.protocol.model(2))
    revenue_before = shares.functions.totalRevenue().call()
    result = pm(
        "infer", "--model", "2", "--prompt", PROMPT, "--max-tokens", "4",
        "--gateway", f"http://127.0.0.1:{port}", "--wait", "0", account=ERC20_CUSTOMER, env=stack.env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the gateway did not serve the paid request: 503" in result.stderr
    ticket = result.stderr.split("--ticket ")[1].split()[0]
    amount = PRICE * (PROMPT_TOKENS + 4)
    assert shares.functions.totalRevenue().call() - revenue_before == to_holders(stack.protocol, amount)
    unserved = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json={"model": "2", "prompt": PROMPT, "max_tokens": 4},
        headers={"Authorization": f"Bearer {ticket}"},
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
        paid = quote_and_pay(stack)
        assert post(stack, "/v1/completions", completion_body(paid), paid["ticket"]).status_code == 200
    seller = ChainClient(stack.url, anvil_account(WORKER_A))
    shares_of_a = seller.contract("ModelShares", protocol.model(1).shares)
    seller.transact(shares_of_a.functions.transfer(anvil_account(BUYER).address, 3 * ETHER // 2))
    for _ in range(2):
        paid = quote_and_pay(stack)
        assert post(stack, "/v1/completions", completion_body(paid), paid["ticket"]).status_code == 200

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
