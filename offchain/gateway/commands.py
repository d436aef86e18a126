"""`pm gateway run` and `pm infer`. web3, hivemind and aiohttp are imported inside the commands so
`pm --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from offchain import options
from offchain.logs import configure_logging
from offchain.options import PeersOption

gateway_app = typer.Typer(help="Sell inference through the stage workers.", no_args_is_help=True)

DEFAULT_GATEWAY = "http://127.0.0.1:8000"


@gateway_app.command("run")
def gateway_run(
    model_id: options.ModelId,
    initial_peers: PeersOption = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="HTTP port (0: any free port).")
    ] = 8000,
    host: Annotated[str, typer.Option("--host", help="HTTP listen address.")] = "127.0.0.1",
    price_per_token_wei: Annotated[
        int,
        typer.Option(
            "--price-per-token-wei",
            min=1,
            envvar="PM_PRICE_PER_TOKEN_WEI",
            help="Price per token (prompt + max_tokens) in the revenue asset's smallest unit.",
        ),
    ] = 10**12,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Largest max_tokens served (default: context - 1)."),
    ] = None,
    confirmations: Annotated[
        int, typer.Option("--confirmations", min=0, help="Blocks a payment must be deep before it is served.")
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds before a stage call counts as failed (and a completion waits for a failed stage).",
        ),
    ] = 30.0,
    allow_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            envvar="PM_GATEWAY_ALLOW_ORIGIN",
            help="Origin of a web page allowed to call the gateway (CORS; repeatable; '*' for any), "
            "e.g. the URL `pm web serve` prints.",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Served request ids and the gateway secret (keep it).")
    ] = Path(".pm/gateway"),
    key_file: options.KeyFile = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
) -> None:
    """Serve paid completions of one model over HTTP until SIGTERM (payments checked on-chain).

    The key (--key-file or PM_PRIVATE_KEY) is the gateway's address: the model's operator must have
    made it a gateway (ModelRegistry.setGateway) for the stage workers to serve it. It sends no
    transactions."""
    import asyncio

    from offchain.errors import UserError
    from offchain.gateway.run import GatewayConfig, checked_origin, open_chain, serve_gateway
    from offchain.keys import load_account
    from offchain.storage.store import open_store
    from offchain.swarm.identity import Identity
    from offchain.swarm.node import LOOPBACK, NetworkConfig

    if not initial_peers:
        raise UserError("pm gateway run needs --initial-peers: the multiaddr a stage worker printed")
    origins = tuple(checked_origin(origin) for origin in allow_origins or [])  # before any secret is read
    account = load_account(key_file)
    protocol = open_chain(rpc_url, deployments)
    configure_logging()
    config = GatewayConfig(
        model_id=model_id,
        host=host,
        port=port,
        network=NetworkConfig(initial_peers=tuple(initial_peers), host_maddrs=LOOPBACK),
        state_dir=state_dir,
        price_per_token=price_per_token_wei,
        max_tokens=max_tokens,
        confirmations=confirmations,
        call_timeout=timeout,
        allowed_origins=origins,
    )
    identity = Identity(bytes(account.key), account.address)
    asyncio.run(serve_gateway(config, protocol, open_store(ipfs_api, store), identity))


def infer(
    model_id: options.ModelId,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to complete.")],
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Tokens to generate.")] = 16,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy.")] = 0.0,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Sample among the k likeliest.")] = None,
    gateway: Annotated[
        str, typer.Option("--gateway", envvar="PM_GATEWAY", help="Gateway URL.")
    ] = DEFAULT_GATEWAY,
    max_amount_wei: Annotated[
        int | None, typer.Option("--max-amount-wei", min=1, help="Refuse to pay a quote above this.")
    ] = None,
    ticket: Annotated[
        str | None,
        typer.Option("--ticket", help="Redeem a request already paid (printed if serving failed)."),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to retry a busy gateway after paying.")
    ] = 120.0,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Pay for a completion on-chain (ETH or the model's ERC-20) and fetch it from a gateway."""
    from offchain.chain.protocol import open_protocol
    from offchain.gateway.customer import GatewayClient, Request
    from offchain.gateway.customer import infer as run_infer

    protocol = open_protocol(rpc_url, key_file, deployments, signer=ticket is None)
    request = Request(model_id, prompt, max_tokens, temperature, top_k)
    result = run_infer(
        protocol, GatewayClient(gateway), request, ticket=ticket, max_amount=max_amount_wei, wait_s=wait
    )
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    paid = result.paid
    reply = result.reply
    payment = f"paid {result.asset.format(paid.amount)}, tx {paid.tx_hash}" if paid.tx_hash else "paid before"
    typer.echo(
        f"{prompt}{reply['choices'][0]['text']}\n"
        f"-- model {model_id}, weights of round {reply['round']}, "
        f"{reply['usage']['completion_tokens']} tokens; {payment}; request {paid.request_id}"
    )
