"""The deployed protocol on one chain: registry, router and ledger handles, and model lookups.

Built from `deployments/<chainId>.json` (written by scripts/deploy.py) and brownie's build
artifacts, so the off-chain code always talks to the contracts that were actually deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from web3.contract import Contract

from offchain.chain.artifacts import load_deployment
from offchain.chain.client import ChainClient, ContractRevert
from offchain.errors import UserError
from offchain.keys import load_account
from offchain.paths import DEPLOYMENTS_DIR

ETH = "0x0000000000000000000000000000000000000000"


class ModelStatus(IntEnum):
    ACTIVE = 0
    PAUSED = 1
    RETIRED = 2


class ClaimStatus(IntEnum):
    """IWorkLedger.ClaimStatus. VOIDED: an earlier claim of the lane was rejected while this one was
    open; it mints nothing and its bond was released."""

    NONE = 0
    PENDING = 1
    CHALLENGED = 2
    UPHELD = 3
    FINALIZED = 4
    REJECTED = 5
    VOIDED = 6


class ChallengeKind(IntEnum):
    """IWorkLedger.ChallengeKind: what a challenge disputes."""

    NONE = 0
    DIVERGENCE = 1  # a replay of (round, step) disagrees with the claim's records
    UNAVAILABLE = 2  # the claim's checkpoint, trace or manifest could not be fetched


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model (IModelRegistry.Model)."""

    model_id: int
    creator: str
    shares: str
    num_stages: int
    status: ModelStatus
    spec_cid: str
    revenue_asset: str
    operator: str
    shares_per_work_unit: int

    @property
    def pays_in_eth(self) -> bool:
        return self.revenue_asset == ETH

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "creator": self.creator,
            "shares": self.shares,
            "num_stages": self.num_stages,
            "status": self.status.name.lower(),
            "spec_cid": self.spec_cid,
            "revenue_asset": self.revenue_asset,
            "operator": self.operator,
            "shares_per_work_unit": str(self.shares_per_work_unit),
        }


class Protocol:
    """Contract handles for one deployment."""

    def __init__(self, client: ChainClient, deployment: dict[str, Any]) -> None:
        self.client = client
        self.deployment = deployment
        contracts = deployment["contracts"]
        self.registry = client.contract("ModelRegistry", contracts["ModelRegistry"]["address"])
        self.router = client.contract("RevenueRouter", contracts["RevenueRouter"]["address"])
        ledger = contracts.get("WorkLedger")
        self.ledger = client.contract("WorkLedger", ledger["address"]) if ledger else None

    @classmethod
    def load(cls, client: ChainClient, deployments_dir: Path = DEPLOYMENTS_DIR) -> Protocol:
        deployment = load_deployment(client.chain_id, deployments_dir)
        registry = deployment["contracts"]["ModelRegistry"]["address"]
        if not client.w3.eth.get_code(registry):
            raise UserError(
                f"no ModelRegistry at {registry} on chain {client.chain_id}: "
                f"{deployments_dir / f'{client.chain_id}.json'} belongs to another chain instance; redeploy"
            )
        return cls(client, deployment)

    def first_block(self) -> int:
        """The block the registry was deployed in: where event scans start."""
        return int(self.deployment["contracts"]["ModelRegistry"]["block"])

    def model(self, model_id: int) -> ModelInfo:
        """A registered model; an unknown id is a UserError naming it."""
        try:
            raw = self.client.call(self.registry.functions.getModel(model_id), action="getModel")
        except ContractRevert as revert:
            if revert.error is not None and revert.error.name == "UnknownModel":
                count = self.client.call(self.registry.functions.modelCount())
                raise UserError(f"unknown model id {model_id} (this chain has {count} models)") from None
            raise
        creator, shares, num_stages, status, spec_cid, asset, operator, rate = raw
        status = ModelStatus(status)
        return ModelInfo(model_id, creator, shares, num_stages, status, spec_cid, asset, operator, rate)

    def shares(self, model: ModelInfo) -> Contract:
        return self.client.contract("ModelShares", model.shares)


def open_protocol(rpc_url: str, key_file: Path | None, deployments_dir: Path, *, signer: bool) -> Protocol:
    """Connect to the chain (with this participant's key when `signer`) and load its deployment."""
    account = load_account(key_file) if signer else None
    return Protocol.load(ChainClient(rpc_url, account), deployments_dir)
