"""The gateway's HTTP API (aiohttp): OpenAI-compatible completions, paid on-chain, served once.

Routes: GET /v1/models (and /v1/models/{id}), POST /v1/completions, POST /v1/chat/completions
(`stream: true` as server-sent events), POST /v1/quote, GET /healthz. Shapes: offchain/gateway/api.py.

Paying. A request is priced before any work: per token, its prompt plus the max_tokens it asks
for. /v1/quote (any completion or chat body) answers the amount and a fresh ticket; the customer
pays the ticket's request id on-chain (RevenueRouter.payForInference) and presents the ticket as
its API key (`Authorization: Bearer 0x...`, so any OpenAI client works) or in `X-Payment-Ticket`
(which wins when both are sent).
A completion without a ticket, or whose request id is unpaid or paid less than the request costs,
is answered 402 with a quote; a ticket is served once (409 afterwards).

Failures: 400 a malformed body or a field out of bounds, 401 a malformed ticket, 404 an unknown
model or route, 503 + Retry-After when the swarm or the chain cannot serve right now (the ticket
stays redeemable); a stream that breaks after its first token ends with an error event (the
ticket is released). A client that disconnects mid-stream has its ticket spent on what it read.
An unexpected exception is logged and answered 500, never with a trace. A client address whose
completions keep finding nothing paid (each one a chain read) gets 429 for a while.

Web pages from the origins the operator allows (the web app's playground) may call every /v1/
route, with the ticket in `Authorization` or `X-Payment-Ticket` (CORS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import requests
from aiohttp import web
from tokenizers import Tokenizer

from offchain.chain.protocol import ModelInfo, Protocol
from offchain.crash import crash_point
from offchain.errors import UserError
from offchain.gateway.api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    envelope,
    invalid,
    parse,
    usage,
)
from offchain.gateway.served import Claim, ServedRequests
from offchain.gateway.tickets import new_ticket, parse_hex32, request_id
from offchain.holder.wallet import Asset
from offchain.model.chat import ChatTemplate
from offchain.model.generate import Completion, Delta, Pipeline, Sampling, check_request, stream_completion
from offchain.model.spec import ModelSpec
from offchain.swarm.authz import RateLimiter
from offchain.swarm.driver import StageLost, WorkerFailed

logger = logging.getLogger(__name__)

UNPAID_PER_SECOND, UNPAID_BURST = 1.0, 20
"""Per client address: completions whose payment check found nothing paid (each cost a chain read)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SWARM_FAILURES = (StageLost, WorkerFailed, TimeoutError)
ROUNDS_TTL_SECONDS = 10.0


@dataclass(frozen=True)
class Pricing:
    """Price per token in the revenue asset's smallest unit; a request pays for its prompt tokens
    plus the max_tokens it asks for (what it may consume, known before any work)."""

    per_token: int

    def amount(self, prompt_tokens: int, max_tokens: int) -> int:
        return self.per_token * (prompt_tokens + max_tokens)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure in OpenAI's error shape: ours, aiohttp's (404, 405, 413) and unexpected ones."""
    try:
        return await handler(request)
    except ApiError as error:
        return web.json_response(error.body(), status=error.status, headers=error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return web.json_response(invalid(error.reason, status=error.status).body(), status=error.status)
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        failure = ApiError(500, "internal error (logged by the gateway)", kind="server_error")
        return web.json_response(failure.body(), status=500)


CORS_PREFIX = "/v1/"
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Payment-Ticket",
    "Access-Control-Max-Age": "600",
}


def cors(allowed_origins: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Let pages from `allowed_origins` ("*": any) read the answers of the /v1/ routes, errors
    included (the playground shows a 402 or 503's message); a preflight from such a page is
    answered 204. No cookies are involved: the ticket a request carries is its only credential."""

    @web.middleware
    async def allow_origins(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = (
            origin is not None
            and request.path.startswith(CORS_PREFIX)
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


async def _json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("the body is not valid JSON") from None


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class _Job:
    """One paid request on its way through the swarm."""

    body: CompletionRequest | ChatRequest
    ids: list[int]
    sampling: Sampling
    rid: str
    due: int
    rounds: list[int]


class Gateway:
    """One model's gateway: prices requests, checks payments on-chain, serves each paid one once."""

    def __init__(
        self,
        *,
        protocol: Protocol,
        model: ModelInfo,
        asset: Asset,
        spec: ModelSpec,
        tokenizer: Tokenizer,
        pipeline: Pipeline,
        served: ServedRequests,
        secret: bytes,
        pricing: Pricing,
        max_tokens: int,
        confirmations: int = 0,
        retry_after_s: int = 5,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.protocol, self.model, self.asset, self.spec = protocol, model, asset, spec
        self.tokenizer, self.chat, self.pipeline = tokenizer, ChatTemplate(tokenizer), pipeline
        self.served, self.secret, self.pricing = served, secret, pricing
        self.max_tokens, self.confirmations, self.retry_after_s = max_tokens, confirmations, retry_after_s
        self.name = str(model.model_id)
        self.created = int(time.time())
        self._rounds: tuple[float, list[int]] | None = None
        self._rounds_read: asyncio.Future | None = None
        self.allowed_origins = allowed_origins
        self.unpaid = RateLimiter(UNPAID_PER_SECOND, UNPAID_BURST)

    def app(self) -> web.Application:
        middlewares = [cors(self.allowed_origins), json_errors]
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model_card)
        app.router.add_post("/v1/quote", self.quote)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        return app

    # ---- chain reads ----------------------------------------------------------------------------

    def _unavailable(self, message: str, code: str) -> ApiError:
        error = ApiError(503, message, kind="server_error", code=code, retry_after=self.retry_after_s)
        error.headers["Retry-After"] = str(self.retry_after_s)
        return error

    async def _chain(self, read: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(read)
        except (requests.RequestException, ConnectionError, TimeoutError) as error:
            raise self._unavailable(
                f"cannot read the chain: {type(error).__name__}", "chain_unavailable"
            ) from None

    async def finalized_rounds(self) -> list[int]:
        """Per stage, the round of its latest finalized checkpoint (ModelRegistry.checkpointOf),
        read at most every ROUNDS_TTL_SECONDS. The requests that find it stale share one read: at a
        ticket boundary of many streaming clients each would otherwise read every stage at once."""
        if self._rounds is not None and time.monotonic() <= self._rounds[0]:
            return self._rounds[1]
        if self._rounds_read is None:
            self._rounds_read = asyncio.ensure_future(self._read_rounds())
            self._rounds_read.add_done_callback(self._rounds_read_done)
        return await asyncio.shield(self._rounds_read)

    async def _read_rounds(self) -> list[int]:
        registry, client = self.protocol.registry.functions, self.protocol.client

        def read() -> list[int]:
            stages = range(self.spec.num_stages)
            calls = (registry.checkpointOf(self.model.model_id, stage) for stage in stages)
            return [int(client.call(call, action="checkpointOf")[2]) for call in calls]

        rounds = await self._chain(read)
        self._rounds = (time.monotonic() + ROUNDS_TTL_SECONDS, rounds)
        return rounds

    def _rounds_read_done(self, read: asyncio.Future) -> None:
        """The next stale request starts a new read; a failed one is retrieved here, since every
        request that awaited it may have gone (each got the failure, or was cancelled)."""
        self._rounds_read = None
        if not read.cancelled():
            read.exception()

    def _payment_of(self, rid: bytes) -> tuple[int, int]:
        client = self.protocol.client
        block: int | Literal["latest"] = "latest"
        if self.confirmations:
            block = max(
                client.rpc("block_number", lambda: client.w3.eth.block_number) - self.confirmations, 0
            )
        fn = self.protocol.router.functions.paymentOf(rid)
        return client.rpc("paymentOf", lambda: fn.call(block_identifier=block))

    # ---- requests -----------------------------------------------------------------------------

    def _prepare(self, body: CompletionRequest | ChatRequest) -> tuple[list[int], Sampling]:
        """The prompt's token ids and the sampling asked for, or the 4xx that refuses the request."""
        if body.model is not None and str(body.model) != self.name:
            raise invalid(
                f"unknown model {body.model!r}: this gateway serves model {self.name!r}",
                param="model",
                code="model_not_found",
                status=404,
            )
        try:
            if isinstance(body, ChatRequest):
                ids = self.chat.prompt_ids(body.conversation())
            else:
                ids = self.tokenizer.encode(body.prompt, add_special_tokens=False).ids
        except UserError as error:
            raise invalid(str(error), param="messages") from None
        requested = body.requested_tokens()
        if requested is None:  # chat: the rest of the context, within this gateway's limit
            requested = max(min(self.max_tokens, self.spec.context - len(ids)), 1)
        if requested > self.max_tokens:
            raise invalid(
                f"max_tokens {requested} exceeds this gateway's limit of {self.max_tokens}",
                param="max_tokens",
            )
        sampling = Sampling(
            max_tokens=requested,
            temperature=float(body.temperature),
            top_k=body.top_k,
            top_p=float(body.top_p),
            seed=body.seed or 0,
        )
        try:
            check_request(self.spec, ids, sampling)
        except UserError as error:
            raise invalid(str(error)) from None
        return ids, sampling

    def _quote(self, prompt_tokens: int, max_tokens: int, ticket: bytes | None = None) -> dict[str, Any]:
        ticket = ticket or new_ticket()
        return {
            "model": self.name,
            "amount": str(self.pricing.amount(prompt_tokens, max_tokens)),
            "requestId": "0x" + request_id(self.secret, self.model.model_id, ticket).hex(),
            "ticket": "0x" + ticket.hex(),
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "price_per_token": str(self.pricing.per_token),
            "revenue_asset": self.asset.address,
            "router": self.protocol.router.address,
        }

    @staticmethod
    def _ticket(request: web.Request) -> bytes | None:
        """The ticket in `X-Payment-Ticket`, else in `Authorization: Bearer` (None when neither): a
        client whose API key is something else sends the ticket as a header of its own."""
        header = request.headers.get("X-Payment-Ticket", "").strip()
        authorization = request.headers.get("Authorization", "")
        bearer = authorization[len("Bearer ") :].strip() if authorization.startswith("Bearer ") else ""
        if not (header or bearer):
            return None
        try:
            return parse_hex32(header or bearer, "the ticket (API key)")
        except UserError as error:
            raise ApiError(
                401,
                f"{error}: get one from POST /v1/quote",
                kind="invalid_request_error",
                code="invalid_api_key",
            ) from None

    async def _check_paid(self, ticket: bytes, rid_bytes: bytes, ids: list[int], max_tokens: int) -> int:
        """The amount due; 402 unless the ticket's request id paid at least that for this model. The
        answer carries a quote to pay: for this same ticket when it is unpaid, for a new one when
        underpaid (a request id pays once, so an underpaid one cannot be topped up)."""
        rid, due = "0x" + rid_bytes.hex(), self.pricing.amount(len(ids), max_tokens)
        paid_model, paid = await self._chain(lambda: self._payment_of(rid_bytes))
        if paid == 0:
            raise ApiError(
                402,
                f"request {rid} is not paid: payForInference({self.model.model_id}, {rid}, {due})",
                kind="payment_required",
                code="unpaid",
                quote=self._quote(len(ids), max_tokens, ticket),
            )
        if paid_model != self.model.model_id:
            raise ApiError(
                402,
                f"request {rid} paid model {paid_model}, not model {self.model.model_id}",
                kind="payment_required",
                code="paid_other_model",
            )
        if paid < due:
            raise ApiError(
                402,
                f"request {rid} paid {paid} but this request costs {due}: pay the new quote",
                kind="payment_required",
                code="underpaid",
                paid=str(paid),
                quote=self._quote(len(ids), max_tokens),
            )
        return due

    async def _admit(self, request: web.Request, schema: type[CompletionRequest | ChatRequest]) -> _Job:
        """Parse, price and check the payment of a request, then claim its request id (409 if it
        is served or being served)."""
        body = parse(await _json(request), schema)
        ids, sampling = self._prepare(body)
        ticket = self._ticket(request)
        if ticket is None:
            raise ApiError(
                402,
                "no ticket: pay the quote, then send its ticket as the API key (Authorization: Bearer)",
                kind="payment_required",
                code="unpaid",
                quote=self._quote(len(ids), sampling.max_tokens),
            )
        rid_bytes = request_id(self.secret, self.model.model_id, ticket)
        client = request.remote or "unknown"
        if not self.unpaid.has(client):
            raise ApiError(
                429,
                "too many unpaid requests from this address: pay, then retry in a few seconds",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )
        try:
            due = await self._check_paid(ticket, rid_bytes, ids, sampling.max_tokens)
        except ApiError as refused:
            if refused.status == 402:  # a chain read that bought nothing: counted against the caller
                self.unpaid.spend(client)
            raise
        rounds = await self.finalized_rounds()
        rid = "0x" + rid_bytes.hex()
        claim = await asyncio.to_thread(self.served.claim, rid)  # a durable write: off the loop
        if claim is not Claim.CLAIMED:
            being = "was already served" if claim is Claim.SERVED else "is being served by another call"
            raise ApiError(
                409,
                f"request {rid} {being}",
                kind="invalid_request_error",
                code="already_served",
                request_id=rid,
            )
        if body.seed is None:  # sampled from the request id: the same ticket draws the same tokens
            sampling = replace(sampling, seed=int.from_bytes(rid_bytes[:8]))
        return _Job(body, ids, sampling, rid, due, rounds)

    def _envelope(self, job: _Job, completion: Completion, *, chunk: bool) -> dict[str, Any]:
        fingerprint = "fp_" + hashlib.sha256("".join(completion.digests).encode()).hexdigest()[:16]
        return envelope(job.body, job.rid, self.name, fingerprint, chunk=chunk)

    def _chunk(self, job: _Job, completion: Completion, choices: list[dict], **extra: Any) -> bytes:
        """One server-sent event of a streamed completion."""
        return _event({**self._envelope(job, completion, chunk=True), "choices": choices, **extra})

    def _provenance(self, job: _Job) -> dict[str, Any]:
        return {"request_id": job.rid, "amount": str(job.due), "round": min(job.rounds), "rounds": job.rounds}

    async def _served(self, job: _Job, completion: Completion) -> None:
        # Shielded: a handler cancelled at shutdown must not drop the record of a completion the
        # customer already has (the next start would release its ticket for a second serving).
        await asyncio.shield(
            asyncio.to_thread(self.served.mark_served, job.rid, len(completion.token_ids), job.due)
        )
        logger.info(
            "served request %s: %d tokens (%s), stages at rounds %s",
            job.rid,
            len(completion.token_ids),
            completion.finish_reason,
            completion.rounds,
        )

    def _released(self, job: _Job, failure: BaseException) -> ApiError:
        self.served.release(job.rid)
        logger.warning("request %s not served, released for a retry: %s", job.rid, failure)
        message = f"the swarm could not serve the request ({failure}); retry with the same ticket"
        return self._unavailable(message, "swarm_unavailable")

    # ---- routes -------------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.name})

    async def _card(self) -> dict[str, Any]:
        rounds = await self.finalized_rounds()
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": self.model.shares,  # the model's share holders: its ModelShares token
            "context_length": self.spec.context,
            "max_tokens": self.max_tokens,
            "price_per_token": str(self.pricing.per_token),
            "revenue_asset": self.asset.address,
            "revenue_symbol": self.asset.symbol,
            "revenue_decimals": self.asset.decimals,
            "router": self.protocol.router.address,
            "spec_cid": self.model.spec_cid,
            "spec_digest": self.spec.digest(),
            "round": min(rounds),
            "rounds": rounds,
        }

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [await self._card()]})

    async def model_card(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.name:
            message = (
                f"unknown model {request.match_info['model']!r}: this gateway serves model {self.name!r}"
            )
            raise invalid(message, param="model", code="model_not_found", status=404)
        return web.json_response(await self._card())

    async def quote(self, request: web.Request) -> web.Response:
        """The price of the completion or chat request in the body, and a ticket to pay it with."""
        data = await _json(request)
        schema = ChatRequest if isinstance(data, dict) and "messages" in data else CompletionRequest
        ids, sampling = self._prepare(parse(data, schema))
        return web.json_response(self._quote(len(ids), sampling.max_tokens))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, await self._admit(request, CompletionRequest))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, await self._admit(request, ChatRequest))

    async def _serve(self, request: web.Request, job: _Job) -> web.StreamResponse:
        completion = Completion()
        try:
            async with self.pipeline.session() as session:
                crash_point("mid-request")
                deltas = stream_completion(
                    session, self.tokenizer, job.ids, job.sampling, job.body.stop_sequences, completion
                )
                async with contextlib.aclosing(deltas):
                    if job.body.stream:
                        return await self._stream(request, job, deltas, completion)
                    async for _ in deltas:
                        pass
        except SWARM_FAILURES as failure:
            raise self._released(job, failure) from None
        except BaseException:
            self.served.release(job.rid)
            raise
        await self._served(job, completion)
        reply = {
            **self._envelope(job, completion, chunk=False),
            "choices": [job.body.choice(completion)],
            "usage": usage(len(job.ids), len(completion.token_ids)),
            **self._provenance(job),
        }
        return web.json_response(reply)

    async def _stream(
        self, request: web.Request, job: _Job, deltas: AsyncIterator[Delta], completion: Completion
    ) -> web.StreamResponse:
        """Server-sent events, one per text increment, once the first one is computed (so a swarm
        that cannot serve is still a plain 503); a final chunk with the finish reason, usage if
        asked for, then `data: [DONE]`."""
        first = await anext(deltas, None)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            delta, index = first, 0
            try:
                while delta is not None:
                    choice = job.body.delta(delta.text, delta.token_ids, None, index == 0)
                    await response.write(self._chunk(job, completion, [choice]))
                    delta, index = await anext(deltas, None), index + 1
            except SWARM_FAILURES as failure:
                await response.write(_event(self._released(job, failure).body()))
                return response
            finish = job.body.delta("", [], completion.finish_reason, False)
            await response.write(self._chunk(job, completion, [finish], **self._provenance(job)))
            if job.body.include_usage:
                counted = usage(len(job.ids), len(completion.token_ids))
                await response.write(self._chunk(job, completion, [], usage=counted))
            await response.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            logger.info(
                "request %s: the client left mid-stream after %d tokens", job.rid, len(completion.token_ids)
            )
        await self._served(job, completion)
        return response
