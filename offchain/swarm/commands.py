"""`pm worker run` and `pm driver run`: the training swarm's processes.

torch and hivemind are imported inside the commands so `pm --help` stays fast."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from offchain import options
from offchain.errors import UserError

if TYPE_CHECKING:
    from offchain.swarm.node import NetworkConfig

worker_app = typer.Typer(help="Compute provider: train one pipeline stage.", no_args_is_help=True)
driver_app = typer.Typer(help="Stream micro-batches through the stages.", no_args_is_help=True)

SpecOption = Annotated[
    Path | None, typer.Option("--model-spec", help="Model spec JSON file (off-chain swarm, no claims).")
]
ChainModelOption = Annotated[
    int | None, typer.Option("--model", min=1, help="On-chain model id; its spec is fetched by CID.")
]
PeersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--initial-peers",
        help="Multiaddr of a swarm member (repeatable), e.g. /ip4/1.2.3.4/tcp/31337/p2p/Qm...",
    ),
]
ModelIdOption = Annotated[
    int, typer.Option("--model-id", help="With --model-spec: the model id in messages (0 without a chain).")
]
KeyEnvOption = Annotated[
    str | None, typer.Option("--private-key-env", help="Environment variable holding the hex private key.")
]


class Cheat(StrEnum):
    """TEST TOOL: the dishonest-worker modes of offchain/cheats.py."""

    SKIP_STEPS = "skip-steps"
    FAKE_DIGEST = "fake-digest"
    WRONG_PARENT = "wrong-parent"


def configure_logging() -> None:
    """Rich log lines on a terminal; plain `time level logger message` lines otherwise (for log files)."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def network_config(
    initial_peers: list[str] | None, host_maddrs: list[str] | None, announce_maddrs: list[str] | None
) -> NetworkConfig:
    from offchain.swarm.node import LOOPBACK, NetworkConfig

    return NetworkConfig(
        initial_peers=tuple(initial_peers or ()),
        host_maddrs=tuple(host_maddrs or LOOPBACK),
        announce_maddrs=tuple(announce_maddrs or ()),
    )


@worker_app.command("run")
def worker_run(
    stage: Annotated[int, typer.Option("--stage", help="Pipeline stage to serve (0-based).")],
    model: ChainModelOption = None,
    model_spec: SpecOption = None,
    initial_peers: PeersOption = None,
    host_maddrs: Annotated[
        list[str] | None,
        typer.Option("--host-maddrs", help="Listen multiaddr (repeatable); default loopback, any port."),
    ] = None,
    announce_maddrs: Annotated[
        list[str] | None,
        typer.Option("--announce-maddrs", help="Multiaddr other machines reach you at (repeatable)."),
    ] = None,
    model_id: ModelIdOption = 0,
    key_file: options.KeyFile = None,
    private_key_env: KeyEnvOption = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Where round state, claim journal and keys are kept for restarts."),
    ] = Path(".pm/swarm-state"),
    cheat: Annotated[
        Cheat | None,
        typer.Option(
            "--cheat",
            help="TEST TOOL, never with real stake: publish and claim a dishonest round (training "
            "with peers stays honest) so a verifier can be shown catching it; the bond is slashed.",
        ),
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
) -> None:
    """Serve one stage over hivemind P2P until SIGTERM; resumes from --state-dir after a crash.

    With --model ID: on-chain, for shares (stake, join, claim every round, finalize the claims).
    With --model-spec FILE: off-chain training only, no claims."""
    import asyncio

    from offchain.swarm.identity import Identity

    if (model is None) == (model_spec is None):
        raise UserError("pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)")
    if model_spec is not None:
        if cheat is not None:
            raise UserError("--cheat changes what a worker claims: it needs --model")
        from offchain.model.spec import load_spec
        from offchain.swarm.stage_worker import WorkerConfig, serve_stage

        spec = load_spec(model_spec)
        spec.check_stage(stage)
        identity = Identity.load(key_file, private_key_env)
        configure_logging()
        network = network_config(initial_peers, host_maddrs, announce_maddrs)
        config = WorkerConfig(spec, stage, identity, network, model_id=model_id, state_dir=state_dir)
        asyncio.run(serve_stage(config))
        return

    from offchain.chain.client import ChainClient
    from offchain.chain.protocol import Protocol
    from offchain.keys import KEY_ENV, load_account
    from offchain.models import spec_of_model
    from offchain.storage.store import open_store

    account = load_account(key_file, private_key_env or KEY_ENV)
    protocol = Protocol.load(ChainClient(rpc_url, account), deployments)
    content = open_store(ipfs_api, store)
    chain_model, spec = spec_of_model(protocol, content, model)
    if not 0 <= stage < chain_model.num_stages:
        raise UserError(
            f"stage {stage} out of range: model {model} has stages 0..{chain_model.num_stages - 1}"
        )
    from offchain.swarm.stage_worker import WorkerConfig, serve_stage
    from offchain.worker import ChainWorker, ChainWorkerConfig

    identity = Identity(bytes(account.key), account.address)
    configure_logging()
    network = network_config(initial_peers, host_maddrs, announce_maddrs)
    config = WorkerConfig(spec, stage, identity, network, model_id=model, state_dir=state_dir)
    role = ChainWorker(
        ChainWorkerConfig(model, stage, spec, state_dir, cheat.value if cheat else None),
        protocol,
        content,
        account,
    )
    asyncio.run(serve_stage(config, role))


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
    from offchain.swarm.run import run_driver
    from offchain.swarm.shaping import Shaping

    if (model is None) == (model_spec is None):
        raise UserError("pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)")
    if model is not None:
        from offchain.chain.protocol import open_protocol
        from offchain.models import spec_of_model
        from offchain.storage.store import open_store

        protocol = open_protocol(rpc_url, None, deployments, signer=False)
        _, spec = spec_of_model(protocol, open_store(ipfs_api, store), model)
        model_id = model
    else:
        from offchain.model.spec import load_spec

        spec = load_spec(model_spec)
    if not initial_peers:
        raise UserError("pm driver run needs --initial-peers: the multiaddr a worker printed when it started")
    identity = Identity.load(key_file, private_key_env)
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
