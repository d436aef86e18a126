"""`pm gateway run`: the model from the chain, its spec by CID, a swarm client node, the HTTP site.

SIGTERM/SIGINT set an Event; `finally` stops the site (in-flight requests finish or are
released), closes the pipeline's spare streams, leaves the DHT and closes the served-request
record."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from offchain.chain.client import ChainClient
from offchain.chain.models import fetch_spec
from offchain.chain.protocol import ModelStatus, Protocol
from offchain.errors import UserError
from offchain.gateway.served import ServedRequests
from offchain.gateway.service import Gateway, Pricing
from offchain.gateway.tickets import load_or_create_secret
from offchain.holder.wallet import asset_of
from offchain.model.tokens import load_tokenizer
from offchain.storage.store import Store
from offchain.swarm.authz import Access
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.inference import SwarmPipeline
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, stop_on_signals

logger = logging.getLogger(__name__)

CHAIN_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class GatewayConfig:
    model_id: int
    host: str
    port: int
    network: NetworkConfig
    state_dir: Path
    price_per_token: int
    max_tokens: int | None = None
    confirmations: int = 0
    call_timeout: float = 30.0
    retry_after_s: int = 5
    allowed_origins: tuple[str, ...] = ()  # web pages that may call the gateway (CORS)


def checked_origin(origin: str) -> str:
    """'*' or scheme://host[:port] as a browser sends it in Origin (a trailing slash is dropped)."""
    origin = origin.rstrip("/")
    parts = urlsplit(origin)
    if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname or parts.path):
        raise UserError(f"--allow-origin must be '*' or scheme://host[:port], not {origin!r}")
    return origin


def open_chain(rpc_url: str, deployments: Path) -> Protocol:
    """A read-only chain view whose RPC retries give up quickly: a request waits at most ~10 s for
    the chain before it is answered 503 (the gateway never sends transactions)."""
    return Protocol.load(ChainClient(rpc_url, retry_deadline_s=CHAIN_RETRY_SECONDS), deployments)


async def serve_gateway(config: GatewayConfig, protocol: Protocol, store: Store, identity: Identity) -> None:
    """`identity`: the gateway's address, bound to its peer id in every `infer` call (the stage
    workers serve only the model's gateways: ModelRegistry.isGateway)."""
    stop = stop_on_signals()
    model = protocol.model(config.model_id)
    if model.status is not ModelStatus.ACTIVE:
        raise UserError(f"model {model.model_id} is {model.status.name.lower()}: it takes no payments")
    spec = fetch_spec(store, model.spec_cid)
    if spec.num_stages != model.num_stages:
        raise UserError(
            f"spec {model.spec_cid} has {spec.num_stages} stages, the registry {model.num_stages}"
        )
    limit = spec.context - 1 if config.max_tokens is None else config.max_tokens
    if not 1 <= limit < spec.context:
        raise UserError(
            f"--max-tokens must be between 1 and {spec.context - 1} (the context is {spec.context})"
        )
    served = ServedRequests(config.state_dir)
    released = served.release_abandoned()
    if released:
        logger.warning("released %d request(s) a previous gateway process left unfinished", released)
    node = await start_node(config.network, client_mode=True)
    runner: web.AppRunner | None = None
    pipeline: SwarmPipeline | None = None
    try:
        driver_config = DriverConfig(
            spec,
            identity,
            model_id=model.model_id,
            call_timeout=config.call_timeout,
            access=Access.on_chain(protocol, model.model_id),
        )
        # A stage that fails mid-completion is waited for as long as a call may take.
        pipeline = SwarmPipeline(Driver(driver_config, node), wait_seconds=config.call_timeout)
        pipeline.replenish()  # spare streams for the first completion too
        gateway = Gateway(
            protocol=protocol,
            model=model,
            asset=asset_of(protocol, model),
            spec=spec,
            tokenizer=load_tokenizer(spec, store),
            pipeline=pipeline,
            served=served,
            secret=load_or_create_secret(config.state_dir),
            pricing=Pricing(config.price_per_token),
            max_tokens=limit,
            confirmations=config.confirmations,
            retry_after_s=config.retry_after_s,
            allowed_origins=frozenset(config.allowed_origins),
        )
        runner = web.AppRunner(gateway.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as error:
            raise UserError(f"cannot listen on {config.host}:{config.port}: {error.strerror}") from None
        host, port = runner.addresses[0][:2]
        logger.info(
            "gateway for model %d (spec %s, %d stages) at %s per token listening on http://%s:%d",
            model.model_id,
            spec.digest()[:16],
            spec.num_stages,
            gateway.asset.format(config.price_per_token),
            host,
            port,
        )
        await stop.wait()
        logger.info("gateway: shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()
        if pipeline is not None:
            await pipeline.close()  # its spare streams: an open session on every stage
        await shutdown_node(node)
        await asyncio.get_running_loop().shutdown_default_executor()  # record writes still running
        served.close()
