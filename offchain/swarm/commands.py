"""`pm driver run`: streams micro-batches through the training swarm's stages.

torch and hivemind are imported inside the command so `pm --help` stays fast."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from offchain import options
from offchain.errors import UserError
from offchain.logs import configure_logging
from offchain.options import ChainModelOption, KeyEnvOption, ModelIdOption, PeersOption, SpecOption

driver_app = typer.Typer(help="Stream micro-batches through the stages.", no_args_is_help=True)


@driver_app.command("run")
def driver_run(
    model: ChainModelOption = None,
    model_spec: SpecOption = None,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Rounds to train from where the swarm is.")
    ] = 1,
    initial_peers: PeersOption = None,
    model_id: ModelIdOption = 0,
    key_file: options.KeyFile = None,
    private_key_env: KeyEnvOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds before a worker call counts as failed.")
    ] = 60.0,
    bandwidth_mbit: Annotated[
        float | None, typer.Option("--bandwidth-mbit", help="Emulate a link of this many Mbit/s per worker.")
    ] = None,
    latency_ms: Annotated[
        float | None, typer.Option("--latency-ms", help="Emulated one-way latency per message.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
) -> None:
    """Train --rounds rounds: stream micro-batches through every stage and back, average replicas.

    --model ID reads the model's spec from the chain (by its CID); --model-spec FILE trains off-chain."""
    import asyncio

    from offchain.swarm.identity import Identity
    from offchain.swarm.node import network_config
    from offchain.swarm.run import run_driver
    from offchain.swarm.shaping import Shaping

    if (model is None) == (model_spec is None):
        raise UserError("pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)")
    protocol = None
    if model is not None:
        from offchain.chain.models import spec_of_model
        from offchain.chain.protocol import open_protocol
        from offchain.storage.store import open_store

        protocol = open_protocol(rpc_url, None, deployments, signer=False)
        _, spec = spec_of_model(protocol, open_store(ipfs_api, store), model)
        model_id = model
    else:
        from offchain.model.spec import load_spec

        spec = load_spec(model_spec)
    if not initial_peers:
        raise UserError("pm driver run needs --initial-peers: the multiaddr a worker printed when it started")
    # On-chain the driver's address must be one of the model's drivers: a throw-away key would be refused.
    from offchain.keys import KEY_ENV

    identity = Identity.load(key_file, private_key_env or (KEY_ENV if model is not None else None))
    configure_logging()
    network = network_config(initial_peers, None, None)
    summary = asyncio.run(
        run_driver(
            spec,
            identity,
            network,
            rounds=rounds,
            model_id=model_id,
            timeout=timeout,
            shaping=Shaping(bandwidth_mbit, latency_ms),
            progress=sys.stderr.isatty() and not as_json,
            chain=protocol,
        )
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        Console().print(
            f"trained {summary['steps']} steps over {len(summary['rounds'])} round(s): "
            f"last loss {summary['final_loss']:.4f}, {summary['tokens_per_second']:.0f} tokens/s; "
            f"stage digests {', '.join(d[:12] for d in summary['final_digests'])}"
        )
