"""Contract ABIs from brownie's build artifacts, deployment records, and custom-error decoding.

Brownie writes build/contracts/<Name>.json (abi, bytecode); scripts/deploy.py writes
deployments/<chainId>.json. Every off-chain component reads these instead of keeping its own
copy of an ABI, so the contracts and the daemons cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from offchain.errors import UserError
from offchain.paths import BUILD_DIR, DEPLOYMENTS_DIR


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def load_artifact(name: str, build_dir: Path = BUILD_DIR) -> Artifact:
    """The ABI and creation bytecode of a compiled contract or interface."""
    for folder in ("contracts", "interfaces"):
        path = build_dir / folder / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            return Artifact(name=name, abi=data["abi"], bytecode=data.get("bytecode", ""))
    raise UserError(f"no build artifact for {name} in {build_dir}: run `brownie compile` (make setup)")


def load_deployment(chain_id: int, deployments_dir: Path = DEPLOYMENTS_DIR) -> dict[str, Any]:
    """The addresses scripts/deploy.py recorded for a chain."""
    path = deployments_dir / f"{chain_id}.json"
    if not path.is_file():
        raise UserError(
            f"no deployment for chain {chain_id} ({path} missing): run `brownie run scripts/deploy.py`"
        )
    return json.loads(path.read_text())


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_abi_type(arg) for arg in entry['inputs'])})"


def _abi_type(arg: dict[str, Any]) -> str:
    if arg["type"].startswith("tuple"):
        inner = ",".join(_abi_type(component) for component in arg["components"])
        return f"({inner}){arg['type'][len('tuple') :]}"
    return arg["type"]


@dataclass(frozen=True)
class DecodedError:
    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        rendered = ", ".join(arg.hex() if isinstance(arg, bytes) else str(arg) for arg in self.args)
        return f"{self.name}({rendered})"


@cache
def _error_table(build_dir: Path) -> dict[bytes, dict[str, Any]]:
    table: dict[bytes, dict[str, Any]] = {}
    for path in sorted(build_dir.glob("*/*.json")):
        abi = json.loads(path.read_text()).get("abi", [])
        for entry in abi:
            if entry.get("type") == "error":
                table[keccak(text=_signature(entry))[:4]] = entry
    return table


def decode_revert(data: bytes, build_dir: Path = BUILD_DIR) -> DecodedError | None:
    """Name and arguments of a revert, from custom errors of every compiled ABI (or Error(string))."""
    if len(data) < 4:
        return None
    selector, payload = data[:4], data[4:]
    if selector == keccak(text="Error(string)")[:4]:
        return DecodedError("Error", tuple(abi_decode(["string"], payload)))
    if selector == keccak(text="Panic(uint256)")[:4]:
        return DecodedError("Panic", tuple(abi_decode(["uint256"], payload)))
    entry = _error_table(build_dir).get(selector)
    if entry is None:
        return None
    types = [_abi_type(arg) for arg in entry["inputs"]]
    values = abi_decode(types, payload)
    readable = (to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True))
    return DecodedError(entry["name"], tuple(readable))
