"""Deploy the protocol with scripts/deploy.py on brownie's live-network path, as on a public testnet.

The chain is registered as a brownie live network (`brownie networks add`), the script runs with
the deployer key in PRIVATE_KEY (not an unlocked account), and the network is removed again.
brownie keeps its networks in one shared file (~/.brownie/network-config.yaml) that it rewrites
in place, so concurrent deployments on this machine take turns under a lock file beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from offchain.demo.anvil import chain_id
from offchain.errors import UserError
from offchain.paths import REPO

NETWORKS_LOCK = Path.home() / ".brownie" / "pm-networks.lock"


@dataclass(frozen=True)
class Deployment:
    document: dict  # deployments/<chainId>.json
    path: Path
    output: str  # what `brownie run` printed (transactions, confirmations)


def brownie(*args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """Run the brownie CLI in the repository; its output, or a UserError with the tail of it."""
    command = [shutil.which("brownie") or str(REPO / ".venv" / "bin" / "brownie"), *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise UserError(brownie_failure(args, result.stdout + result.stderr))
    return result.stdout


def brownie_failure(args: tuple[str, ...], output: str) -> str:
    """What went wrong in a brownie command: one line for the dotted-path import failure (its
    start-up hook is missing, see offchain/brownie_paths.py), else the tail of the output."""
    if "ModuleNotFoundError" in output and any("." in part for part in REPO.parts[1:]):
        return (
            f"brownie cannot import scripts/deploy.py from {REPO}: a folder in that path has a dot "
            "and the import hook for it is not installed in this venv; run `make setup` "
            "(or `python -m offchain.brownie_paths`)"
        )
    return f"brownie {' '.join(args)} failed: {output[-2000:]}"


@contextmanager
def networks_lock() -> Iterator[None]:
    NETWORKS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(NETWORKS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def deploy_protocol(rpc_url: str, deployments_dir: Path, deployer: LocalAccount) -> Deployment:
    """`brownie networks add` + `brownie run scripts/deploy.py --network` + `networks delete`."""
    chain = chain_id(rpc_url)
    network = f"pm-{chain}-{rpc_url.rsplit(':', 1)[-1]}"
    env = {**os.environ, "PRIVATE_KEY": deployer.key.hex(), "PM_DEPLOYMENTS": str(deployments_dir)}
    with networks_lock():
        brownie("networks", "add", "Ethereum", network, f"host={rpc_url}", f"chainid={chain}")
        try:
            output = brownie("run", "scripts/deploy.py", "--network", network, env=env)
        finally:
            brownie("networks", "delete", network)
    path = deployments_dir / f"{chain}.json"
    return Deployment(json.loads(path.read_text()), path, output)
