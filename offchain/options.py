"""Command-line options shared by every `pm` command, so each flag means one thing everywhere.

Each option also reads an environment variable (documented in .env.example), so a daemon's
configuration can live in its environment instead of its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from offchain.paths import DEPLOYMENTS_DIR

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_STORE = Path(".pm/store")

RpcUrl = Annotated[
    str, typer.Option("--rpc-url", envvar="PM_RPC_URL", help="Ethereum JSON-RPC URL of the chain to use.")
]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="PM_KEY_FILE",
        help="Hex private key or encrypted keystore (password in PM_KEY_PASSWORD); else PM_PRIVATE_KEY.",
    ),
]
Deployments = Annotated[
    Path,
    typer.Option("--deployments", envvar="PM_DEPLOYMENTS", help="Folder of <chainId>.json deployments."),
]
StoreDir = Annotated[
    Path,
    typer.Option("--store", envvar="PM_STORE", help="Embedded store folder (and the Kubo spool's parent)."),
]
IpfsApi = Annotated[
    str | None,
    typer.Option("--ipfs-api", envvar="PM_IPFS_API", help="Kubo RPC API URL, e.g. http://127.0.0.1:5001."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
ModelId = Annotated[int, typer.Option("--model", min=1, help="On-chain model id.")]

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

__all__ = [
    "DEFAULT_RPC_URL",
    "DEFAULT_STORE",
    "DEPLOYMENTS_DIR",
    "ChainModelOption",
    "Deployments",
    "IpfsApi",
    "JsonOut",
    "KeyEnvOption",
    "KeyFile",
    "ModelId",
    "ModelIdOption",
    "PeersOption",
    "RpcUrl",
    "SpecOption",
    "StoreDir",
]
