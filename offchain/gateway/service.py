"""The gateway's HTTP API (aiohttp): quotes, on-chain payment checks, completions through the swarm.

Every answer is JSON, errors included: 400 malformed JSON, 404 unknown model or route, 402 unpaid
or underpaid (with a quote to pay), 409 a request id already served, 422 a field out of bounds,
503 + Retry-After when the swarm or the chain cannot serve right now (the paid request stays
redeemable). An unexpected exception is logged and answered 500 with a JSON body, never a trace.
Web pages from the origins the operator allows (the web app's playground) may call the model,
quote and completion routes (CORS).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offchain.chain.protocol import ModelInfo, Protocol
from offchain.errors import UserError
from offchain.gateway.served import Claim, ServedRequests
from offchain.gateway.tickets import new_ticket, parse_hex32, request_id
from offchain.holder.wallet import Asset
from offchain.model.generate import PassBatcher, Sampling, check_request, complete
from offchain.model.spec import ModelSpec
from offchain.swarm.authz import RateLimiter
from offchain.swarm.driver import StageLost, WorkerFailed

logger = logging.getLogger(__name__)

UNPAID_PER_SECOND, UNPAID_BURST = 1.0, 20
"""Per client address: completions whose payment check found nothing paid (each cost a chain read)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Pricing:
    """Price per token in the revenue asset's smallest unit; a request pays for its prompt tokens
    plus the max_tokens it asks for (what it may consume, known before any work)."""

    per_token: int

    def amount(self, prompt_tokens: int, max_tokens: int) -> int:
        return self.per_token * (prompt_tokens + max_tokens)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: int | None = Field(default=None, description="must be the gateway's model when given")
    prompt: str
    max_tokens: int = Field(ge=1)


class QuoteBody(_Body):
    pass


class CompletionBody(_Body):
    ticket: str
    requestId: str | None = Field(default=None, description="optional: must be the ticket's request id")
    temperature: float | int = Field(default=0.0, ge=0)
    top_k: int | None = None


class ApiError(Exception):
    """An answer other than 200, with a JSON body and optional headers."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra
        self.headers: dict[str, str] = {}


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response({"error": message, "status": status, **extra}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON body: ours, aiohttp's (404, 405, 413) and unexpected ones."""
    try:
        return await handler(request)
    except ApiError as error:
        return _error_response(error.status, str(error), error.headers, **error.extra)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error_response(error.status, error.reason)
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return _error_response(500, "internal error (logged by the gateway)")


CORS_PATHS = frozenset({"/v1/models", "/v1/quote", "/v1/completions"})
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}


def cors(allowed_origins: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Let pages from `allowed_origins` ("*": any) read the answers of CORS_PATHS, errors included
    (the playground shows a 402 or 503's message); a preflight from such a page is answered 204.
    No credentials are involved: a ticket in the body is what a request carries."""

    @web.middleware
    async def allow_origins(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = (
            origin is not None
            and request.path in CORS_PATHS
            and ("*" in allowed_origins or origin in allowed_origins)
        )
        if allowed and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers=CORS_HEADERS)
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        return response

    return allow_origins


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def _read(request: web.Request, schema: type[_Body]) -> Any:
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, _first_error(error)) from None


class Gateway:
    """One model's gateway: prices requests, checks payments on-chain, serves each paid one once."""

    def __init__(
        self,
        *,
        protocol: Protocol,
        model: ModelInfo,
        asset: Asset,
        spec: ModelSpec,
        passes: PassBatcher,
        served: ServedRequests,
        secret: bytes,
        pricing: Pricing,
        max_tokens: int,
        confirmations: int = 0,
        retry_after_s: int = 5,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.protocol, self.model, self.asset, self.spec = protocol, model, asset, spec
        self.passes, self.served, self.secret, self.pricing = passes, served, secret, pricing
        self.max_tokens, self.confirmations, self.retry_after_s = max_tokens, confirmations, retry_after_s
        self.allowed_origins = allowed_origins
        self.latest_rounds: list[int] | None = None
        self.unpaid = RateLimiter(UNPAID_PER_SECOND, UNPAID_BURST)

    def app(self) -> web.Application:
        middlewares = [cors(self.allowed_origins), json_errors]
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/quote", self.quote)
        app.router.add_post("/v1/completions", self.completions)
        return app

    # ---- helpers ------------------------------------------------------------------------------

    def _checked(self, body: _Body, extra: dict[str, Any] | None = None) -> tuple[list[int], Sampling]:
        if body.model is not None and body.model != self.model.model_id:
            raise ApiError(
                404, f"unknown model {body.model}: this gateway serves model {self.model.model_id}"
            )
        if body.max_tokens > self.max_tokens:
            raise ApiError(
                422, f"max_tokens {body.max_tokens} exceeds this gateway's limit of {self.max_tokens}"
            )
        sampling = Sampling(max_tokens=body.max_tokens, **(extra or {}))
        try:
            return check_request(self.spec, body.prompt, sampling), sampling
        except UserError as error:
            raise ApiError(422, str(error)) from None

    def _quote(self, prompt_tokens: int, max_tokens: int, ticket: bytes | None = None) -> dict[str, Any]:
        ticket = ticket or new_ticket()
        return {
            "model": self.model.model_id,
            "amount": str(self.pricing.amount(prompt_tokens, max_tokens)),
            "requestId": "0x" + request_id(self.secret, self.model.model_id, ticket).hex(),
            "ticket": "0x" + ticket.hex(),
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "price_per_token": str(self.pricing.per_token),
            "revenue_asset": self.asset.address,
            "router": self.protocol.router.address,
        }

    def _unavailable(self, message: str) -> ApiError:
        error = ApiError(503, message, retry_after=self.retry_after_s)
        error.headers["Retry-After"] = str(self.retry_after_s)
        return error

    def _payment_of(self, rid: bytes) -> tuple[int, int]:
        client = self.protocol.client
        block: int | Literal["latest"] = "latest"
        if self.confirmations:
            block = max(
                client.rpc("block_number", lambda: client.w3.eth.block_number) - self.confirmations, 0
            )
        fn = self.protocol.router.functions.paymentOf(rid)
        return client.rpc("paymentOf", lambda: fn.call(block_identifier=block))

    # ---- routes -------------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model.model_id})

    async def models(self, _: web.Request) -> web.Response:
        rounds = self.latest_rounds
        record = {
            "id": self.model.model_id,
            "spec_cid": self.model.spec_cid,
            "spec_digest": self.spec.digest(),
            "context": self.spec.context,
            "max_tokens": self.max_tokens,
            "price_per_token": str(self.pricing.per_token),
            "revenue_asset": self.asset.address,
            "revenue_symbol": self.asset.symbol,
            "revenue_decimals": self.asset.decimals,
            "router": self.protocol.router.address,
            "latest_round": None if rounds is None else min(rounds),
            "latest_rounds": rounds,
        }
        return web.json_response({"data": [record]})

    async def quote(self, request: web.Request) -> web.Response:
        body = await _read(request, QuoteBody)
        ids, sampling = self._checked(body)
        return web.json_response(self._quote(len(ids), sampling.max_tokens))

    async def completions(self, request: web.Request) -> web.Response:
        body = await _read(request, CompletionBody)
        ticket = self._ticket(body.ticket)
        rid_bytes = request_id(self.secret, self.model.model_id, ticket)
        ids, sampling = self._checked(
            body,
            {
                "temperature": float(body.temperature),
                "top_k": body.top_k,
                "seed": int.from_bytes(rid_bytes[:8]),
            },
        )
        rid = "0x" + rid_bytes.hex()
        if body.requestId is not None and body.requestId.lower() != rid:
            raise ApiError(422, f"requestId {body.requestId} is not the request id of this ticket ({rid})")
        due = self.pricing.amount(len(ids), sampling.max_tokens)
        client = request.remote or "unknown"
        if not self.unpaid.has(client):
            raise ApiError(
                429, "too many unpaid requests from this address: pay, then retry in a few seconds"
            )
        try:
            await self._check_paid(ticket, rid_bytes, due, len(ids), sampling.max_tokens)
        except ApiError as refused:
            if refused.status == 402:  # a chain read that bought nothing: counted against the caller
                self.unpaid.spend(client)
            raise
        claim = self.served.claim(rid)
        if claim is Claim.SERVED:
            raise ApiError(409, f"request {rid} was already served", requestId=rid)
        if claim is Claim.SERVING:
            raise ApiError(409, f"request {rid} is being served by another call", requestId=rid)
        try:
            completion = await complete(self.passes, self.spec, body.prompt, sampling)
        except (StageLost, WorkerFailed, TimeoutError) as failure:
            self.served.release(rid)
            logger.warning("request %s not served, released for a retry: %s", rid, failure)
            message = f"the swarm could not serve the request ({failure}); retry with the same ticket"
            raise self._unavailable(message) from None
        except BaseException:
            self.served.release(rid)
            raise
        self.served.mark_served(rid, len(completion.token_ids), due)
        self.latest_rounds = completion.rounds
        logger.info(
            "served request %s: %d tokens, rounds %s", rid, len(completion.token_ids), completion.rounds
        )
        return web.json_response(
            {
                "model": self.model.model_id,
                "requestId": rid,
                "text": completion.text,
                "tokens": completion.token_ids,
                "rounds": completion.rounds,
                "round": min(completion.rounds),
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(completion.token_ids)},
                "amount": str(due),
            }
        )

    def _ticket(self, text: str) -> bytes:
        try:
            return parse_hex32(text, "ticket")
        except UserError as error:
            raise ApiError(422, str(error)) from None

    async def _check_paid(
        self, ticket: bytes, rid_bytes: bytes, due: int, prompt_tokens: int, max_tokens: int
    ) -> None:
        """402 unless the ticket's request id paid at least `due` for this model; the answer carries
        a quote to pay: for this same ticket when it is unpaid, for a new one when underpaid (a
        request id pays once, so an underpaid one cannot be topped up)."""
        rid = "0x" + rid_bytes.hex()
        try:
            paid_model, paid = await asyncio.to_thread(self._payment_of, rid_bytes)
        except (requests.RequestException, ConnectionError, TimeoutError) as error:
            raise self._unavailable(
                f"cannot read the payment from the chain: {type(error).__name__}"
            ) from None
        if paid == 0:
            raise ApiError(
                402,
                f"request {rid} is not paid: payForInference({self.model.model_id}, {rid}, {due})",
                quote=self._quote(prompt_tokens, max_tokens, ticket),
            )
        if paid_model != self.model.model_id:
            raise ApiError(402, f"request {rid} paid model {paid_model}, not model {self.model.model_id}")
        if paid < due:
            raise ApiError(
                402,
                f"request {rid} paid {paid} but this request costs {due}: pay the new quote",
                paid=str(paid),
                quote=self._quote(prompt_tokens, max_tokens),
            )
