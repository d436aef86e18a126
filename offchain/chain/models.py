"""Registering a model: pin its spec, create it on-chain; and reading a model's spec back by CID.

The spec is pinned in its canonical JSON form (sorted keys, every default spelled out), so the
CID on-chain names exactly one model definition whatever the formatting of the file it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.logs import DISCARD

from offchain.chain.protocol import ETH, ModelInfo, Protocol
from offchain.errors import UserError
from offchain.model.spec import ModelSpec, load_spec, parse_spec
from offchain.storage.errors import StorageError
from offchain.storage.store import Store

MAX_SHARES_PER_WORK_UNIT = 2**96 - 1
MAX_SPEC_BYTES = 64 * 1024
"""A spec is a few hundred bytes of canonical JSON: a CID naming more is not read past this."""


@dataclass(frozen=True)
class CreatedModel:
    model: ModelInfo
    spec: ModelSpec
    tx_hash: str
    block: int

    def to_json(self) -> dict[str, Any]:
        extra = {"spec_digest": self.spec.digest(), "tx": self.tx_hash, "block": self.block}
        return {**self.model.to_json(), **extra}


def checked_address(value: str, what: str) -> str:
    """A checksummed address, or a UserError saying which option was malformed."""
    if value.lower() == "eth":
        return ETH
    try:
        return Web3.to_checksum_address(value)
    except ValueError:
        raise UserError(f"{what}: {value!r} is not an address (0x + 40 hex digits)") from None


def pin_spec(store: Store, spec: ModelSpec) -> str:
    return store.put(spec.canonical_json())


def fetch_spec(store: Store, cid: str) -> ModelSpec:
    """The model spec stored at `cid`; anything that is not a valid spec is a UserError naming the CID
    (ContentTooLarge, a StorageError, past MAX_SPEC_BYTES)."""
    raw = store.get(cid, max_size=MAX_SPEC_BYTES)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"spec CID {cid} does not decode as a JSON model spec") from None
    if not isinstance(data, dict):
        raise UserError(f"spec CID {cid} does not decode as a JSON model spec")
    return parse_spec(data, f"at {cid}")


def create_model(
    protocol: Protocol,
    store: Store,
    spec_path: Path,
    *,
    shares_per_work_unit: int,
    revenue_asset: str,
    operator: str | None,
) -> CreatedModel:
    """Validate and pin the spec, then call createModel; the spec is pinned before any transaction."""
    spec = load_spec(spec_path)
    if not 1 <= shares_per_work_unit <= MAX_SHARES_PER_WORK_UNIT:
        raise UserError(f"--shares-per-work-unit must be between 1 and 2^96-1, not {shares_per_work_unit}")
    if len(spec.canonical_json()) > MAX_SPEC_BYTES:
        raise UserError(f"{spec_path}: the spec's canonical JSON is over {MAX_SPEC_BYTES} bytes")
    client = protocol.client
    spec_cid = pin_spec(store, spec)
    function = protocol.registry.functions.createModel(
        spec_cid,
        spec.num_stages,
        shares_per_work_unit,
        checked_address(revenue_asset, "--revenue-asset"),
        checked_address(operator or client.address, "--operator"),
    )
    receipt = client.transact(function, action="createModel")
    (created,) = protocol.registry.events.ModelCreated().process_receipt(receipt, errors=DISCARD)
    model = protocol.model(created["args"]["modelId"])
    return CreatedModel(model, spec, receipt["transactionHash"].hex(), receipt["blockNumber"])


def set_role(protocol: Protocol, model_id: int, role: str, account: str, allowed: bool) -> str:
    """Make `account` one of the model's drivers (the creator's call: ModelRegistry.setDriver) or
    gateways (the operator's: setGateway), or stop it being one; returns the transaction hash."""
    protocol.model(model_id)  # an unknown id is one clear error, before anything is sent
    address = checked_address(account, role)
    setter = (
        protocol.registry.functions.setDriver if role == "driver" else protocol.registry.functions.setGateway
    )
    receipt = protocol.client.transact(setter(model_id, address, allowed), action=f"set {role}")
    return receipt["transactionHash"].to_0x_hex()


def spec_of_model(protocol: Protocol, store: Store, model_id: int) -> tuple[ModelInfo, ModelSpec]:
    """A registered model and its spec fetched by the CID on-chain; one UserError line if the id is
    unknown, the CID does not decode or is not in the store, or the spec disagrees with the chain."""
    model = protocol.model(model_id)
    try:
        spec = fetch_spec(store, model.spec_cid)
    except StorageError as error:
        raise UserError(f"model {model_id}'s spec CID {model.spec_cid!r}: {error}") from None
    if spec.num_stages != model.num_stages:
        raise UserError(
            f"model {model_id}'s spec has {spec.num_stages} stages, the registry says {model.num_stages}"
        )
    return model, spec
