"""`pm web serve` and `pm web build`: the web app for holders, customers and anyone curious."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from offchain import options

web_app = typer.Typer(
    help="The web app: claim revenue, pay for completions, model dashboards.", no_args_is_help=True
)

Gateways = Annotated[
    list[str] | None,
    typer.Option(
        "--gateway", envvar="PM_GATEWAY", help="Gateway URL for the playground (repeatable: one per model)."
    ),
]


@web_app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="HTTP listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8080,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    gateways: Gateways = None,
) -> None:
    """Serve the web app until SIGTERM (static files and config.json; no keys, no secrets)."""
    from offchain.logs import configure_logging
    from offchain.web.config import load_web_config
    from offchain.web.server import serve_web

    config = load_web_config(rpc_url, deployments, gateways or [])
    configure_logging()
    serve_web(config, host, port)


@web_app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the app into (for any static host).")],
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    gateways: Gateways = None,
    as_json: options.JsonOut = False,
) -> None:
    """Write the web app as a static folder with its config.json (chain id, RPC, contracts, gateways)."""
    from offchain.web.build import build_site
    from offchain.web.config import load_web_config

    config = load_web_config(rpc_url, deployments, gateways or [])
    written = build_site(config, out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), "files": written, "config": config.model_dump()}))
        return
    typer.echo(f"web app for chain {config.chainId}: {len(written)} files in {out}, for any static host")
