"""`pm worker run` and `pm driver run`: the training swarm's processes.

torch and hivemind are imported inside the commands so `pm --help` stays fast."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from offchain.errors import UserError

if TYPE_CHECKING:
    from offchain.swarm.node import NetworkConfig

worker_app = typer.Typer(help="Compute provider: train one pipeline stage.", no_args_is_help=True)
driver_app = typer.Typer(help="Stream micro-batches through the stages.", no_args_is_help=True)

SpecOption = Annotated[Path, typer.Option("--model-spec", help="Model spec JSON file.")]
PeersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--initial-peers",
        help="Multiaddr of a swarm member (repeatable), e.g. /ip4/1.2.3.4/tcp/31337/p2p/Qm...",
    ),
]
ModelIdOption = Annotated[int, typer.Option("--model-id", help="On-chain model id (0 without a chain).")]
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", help="File holding this participant's hex private key.")
]
KeyEnvOption = Annotated[
    str | None, typer.Option("--private-key-env", help="Environment variable holding the hex private key.")
]


def _configure_logging() -> None:
    """Rich log lines on a terminal; plain `time level logger message` lines otherwise (for log files)."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _network(
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
    model_spec: SpecOption,
    stage: Annotated[int, typer.Option("--stage", help="Pipeline stage to serve (0-based).")],
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
    key_file: KeyFileOption = None,
    private_key_env: KeyEnvOption = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the last committed round state is kept for restarts.")
    ] = Path(".pm/swarm-state"),
) -> None:
    """Serve one stage over hivemind P2P until SIGTERM; resumes from --state-dir after a crash."""
    import asyncio

    from offchain.model.spec import load_spec
    from offchain.swarm.identity import Identity
    from offchain.swarm.stage_worker import WorkerConfig, serve_stage

    spec = load_spec(model_spec)
    spec.check_stage(stage)
    identity = Identity.load(key_file, private_key_env)
    _configure_logging()
    network = _network(initial_peers, host_maddrs, announce_maddrs)
    config = WorkerConfig(spec, stage, identity, network, model_id=model_id, state_dir=state_dir)
    asyncio.run(serve_stage(config))


@driver_app.command("run")
def driver_run(
    model_spec: SpecOption,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Rounds to train from where the swarm is.")
    ] = 1,
    initial_peers: PeersOption = None,
    model_id: ModelIdOption = 0,
    key_file: KeyFileOption = None,
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
) -> None:
    """Train --rounds rounds: stream micro-batches through every stage and back, average replicas."""
    import asyncio

    from offchain.model.spec import load_spec
    from offchain.swarm.identity import Identity
    from offchain.swarm.run import run_driver
    from offchain.swarm.shaping import Shaping

    spec = load_spec(model_spec)
    if not initial_peers:
        raise UserError("pm driver run needs --initial-peers: the multiaddr a worker printed when it started")
    identity = Identity.load(key_file, private_key_env)
    _configure_logging()
    network = _network(initial_peers, None, None)
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
