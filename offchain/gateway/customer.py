"""`pm infer`: ask a gateway for a quote, pay it on-chain from the customer's key, fetch the text
(POST /v1/completions with the ticket as the API key, as any OpenAI client would).

The payment is checked against what the chain says before any money moves: the quote must be
for the requested model and name the router of this deployment, and it must not exceed the
customer's `max_amount`. Once paid, a 503 from the gateway is retried (Retry-After) until
`wait_s` runs out; the ticket is printed with any failure after payment, so the paid request can
be redeemed later with `pm infer --ticket` (a request id is served once, never charged twice).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
from web3 import Web3

from offchain.chain.protocol import Protocol
from offchain.errors import UserError
from offchain.holder.wallet import Asset, asset_of

HTTP_TIMEOUT_S = 300.0
UNREACHABLE_RETRY_S = 2.0


@dataclass(frozen=True)
class Request:
    model_id: int
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_k: int | None = None


@dataclass(frozen=True)
class Paid:
    request_id: str
    ticket: str
    amount: int
    tx_hash: str | None


@dataclass(frozen=True)
class Result:
    request: Request
    paid: Paid
    asset: Asset
    reply: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.request.model_id,
            "text": self.reply["choices"][0]["text"],
            "round": self.reply["round"],
            "rounds": self.reply["rounds"],
            "usage": self.reply["usage"],
            "requestId": self.paid.request_id,
            "amount_wei": str(self.paid.amount),
            "asset": self.asset.address,
            "tx": self.paid.tx_hash,
        }


class GatewayClient:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=HTTP_TIMEOUT_S)

    def _send(self, path: str, body: dict[str, Any], ticket: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ticket}"} if ticket else {}
        return self.http.post(self.url + path, json=body, headers=headers)

    def _unreachable(self, error: httpx.HTTPError) -> str:
        return f"cannot reach the gateway at {self.url}: {type(error).__name__}: {error}"

    def post(self, path: str, body: dict[str, Any], ticket: str | None = None) -> httpx.Response:
        try:
            return self._send(path, body, ticket)
        except httpx.HTTPError as error:
            raise UserError(self._unreachable(error)) from None

    def quote(self, request: Request) -> dict[str, Any]:
        body = {"model": str(request.model_id), "prompt": request.prompt, "max_tokens": request.max_tokens}
        response = self.post("/v1/quote", body)
        if response.status_code != 200:
            raise UserError(f"the gateway refused the quote: {_error_text(response)}")
        return response.json()

    def complete(self, request: Request, ticket: str, wait_s: float) -> dict[str, Any]:
        """POST /v1/completions, riding out 503s (swarm or chain briefly down) and a gateway that
        cannot be reached (restarting after a crash: the paid ticket stays redeemable) until `wait_s`
        passes."""
        body = {
            "model": str(request.model_id),
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_k": request.top_k,
        }
        give_up_at = time.monotonic() + wait_s
        while True:
            try:
                response = self._send("/v1/completions", body, ticket)
            except httpx.HTTPError as error:
                failure, retry_after = self._unreachable(error), UNREACHABLE_RETRY_S
            else:
                if response.status_code == 200:
                    return response.json()
                if response.status_code == 409:
                    raise UserError(f"the gateway refused the request: {_error_text(response)}")
                failure = _error_text(response)
                retry_after = float(response.headers.get("Retry-After", "5"))
                if response.status_code != 503:
                    retry_after = math.inf
            if time.monotonic() + retry_after > give_up_at:
                raise UserError(
                    f"the gateway did not serve the paid request: {failure}; "
                    f"redeem it later with --ticket {ticket}"
                )
            time.sleep(retry_after)


def _error_text(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"


def pay(protocol: Protocol, request: Request, quote: dict[str, Any], max_amount: int | None) -> Paid:
    """payForInference for the quote, in ETH or the model's ERC-20 (approving the router first)."""
    model = protocol.model(request.model_id)
    if quote.get("model") != str(request.model_id):
        raise UserError(f"the gateway quoted model {quote.get('model')}, not model {request.model_id}")
    if Web3.to_checksum_address(quote["router"]) != protocol.router.address:
        raise UserError(
            f"the gateway names router {quote['router']}, not this deployment's {protocol.router.address}"
        )
    amount, request_id = int(quote["amount"]), quote["requestId"]
    if max_amount is not None and amount > max_amount:
        raise UserError(f"the gateway asks {amount}, more than --max-amount {max_amount}")
    client = protocol.client
    pay_fn = protocol.router.functions.payForInference(
        request.model_id, bytes.fromhex(request_id[2:]), amount
    )
    if model.pays_in_eth:
        receipt = client.transact(pay_fn, value=amount, action="payForInference")
    else:
        token = client.contract("IERC20", model.revenue_asset)
        if token.functions.allowance(client.address, protocol.router.address).call() < amount:
            client.transact(token.functions.approve(protocol.router.address, amount), action="approve")
        receipt = client.transact(pay_fn, action="payForInference")
    return Paid(request_id, quote["ticket"], amount, receipt["transactionHash"].to_0x_hex())


def infer(
    protocol: Protocol,
    gateway: GatewayClient,
    request: Request,
    *,
    ticket: str | None,
    max_amount: int | None,
    wait_s: float,
) -> Result:
    """Quote, pay and fetch; with `ticket`, redeem an already-paid request without paying again."""
    if ticket is None:
        quote = gateway.quote(request)
        paid = pay(protocol, request, quote, max_amount)
    else:
        paid = Paid("", ticket, 0, None)
    reply = gateway.complete(request, paid.ticket, wait_s)
    if ticket is not None:
        paid = Paid(reply["request_id"], ticket, int(reply["amount"]), None)
    asset = asset_of(protocol, protocol.model(request.model_id))
    return Result(request, paid, asset, reply)
