"""Deploy the protocol contracts to the active brownie network and write deployments/<chainId>.json.

    brownie run scripts/deploy.py --network pm-contracts      # any local anvil network
    brownie run scripts/deploy.py --network sepolia           # PRIVATE_KEY from .env

On development networks the first unlocked account deploys; on live networks the key in
PRIVATE_KEY (the environment, or ./.env, which brownie loads without overriding a set variable)
does, each transaction waits for PM_CONFIRMATIONS blocks (default 2; 1 on a local chain, which
mines only when it receives a transaction), and the treasury defaults to the deployer unless
PM_TREASURY is set. A local chain (anvil/hardhat/ganache chain id) gets the demo parameters
whichever way brownie reaches it; every other chain the public-testnet ones. The JSON file is what
every off-chain component reads.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from brownie import ModelRegistry, ModelShares, RevenueRouter, WorkLedger, accounts, chain, network
from brownie._config import CONFIG
from brownie.network import contract as brownie_contract

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = Path(os.environ.get("PM_DEPLOYMENTS") or ROOT / "deployments")


ETHER = 10**18
# Chain ids of local development chains (anvil and hardhat: 31337, ganache: 1337): no public
# network uses them, so a deployment there gets the demo parameters even on brownie's live path.
LOCAL_CHAIN_IDS = frozenset({1337, 31337})


@dataclass(frozen=True)
class LedgerParameters:
    """WorkLedger parameters, in the order of IWorkLedger.Parameters."""

    challenge_window: int
    claim_bond: int
    max_work_units_per_claim: int
    quorum: int
    burn_bps: int
    vote_window: int
    unbonding_period: int
    min_worker_stake: int
    min_validator_stake: int
    max_pending_claims: int
    availability_grace: int
    validator_delay: int
    vote_bond: int
    loser_vote_slash_bps: int
    no_quorum_slash_bps: int

    def as_tuple(self) -> tuple:
        return tuple(asdict(self).values())


# Demo: windows of seconds so a run settles while you watch; validators may act 1 s after they
# register; one other validator decides a dispute.
DEMO_LEDGER = LedgerParameters(
    challenge_window=30,
    claim_bond=ETHER // 10,
    max_work_units_per_claim=10_000,
    quorum=1,
    burn_bps=1_000,
    vote_window=30,
    unbonding_period=60,
    min_worker_stake=ETHER // 2,
    min_validator_stake=ETHER // 2,
    max_pending_claims=64,
    availability_grace=10,
    validator_delay=1,
    vote_bond=ETHER // 100,
    loser_vote_slash_bps=5_000,
    no_quorum_slash_bps=1_000,
)
# Public testnet: a day to challenge and a day to vote; a validator waits three days before it may
# challenge or vote, longer than both windows together, so no claim can be challenged or voted on by
# addresses registered after its submission; an unbonding week outlasts every window.
TESTNET_LEDGER = LedgerParameters(
    challenge_window=24 * 3600,
    claim_bond=ETHER // 20,
    max_work_units_per_claim=10_000,
    quorum=3,
    burn_bps=2_000,
    vote_window=24 * 3600,
    unbonding_period=7 * 24 * 3600,
    min_worker_stake=ETHER // 10,
    min_validator_stake=ETHER // 2,
    max_pending_claims=64,
    availability_grace=6 * 3600,
    validator_delay=3 * 24 * 3600,
    vote_bond=ETHER // 100,
    loser_vote_slash_bps=5_000,
    no_quorum_slash_bps=2_000,
)


@dataclass(frozen=True)
class Parameters:
    """Deployment parameters; `for_network` picks the demo or the public-testnet defaults."""

    treasury: str
    protocol_fee_bps: int
    operator_fee_bps: int
    ledger: LedgerParameters

    @classmethod
    def for_network(cls, deployer: str, local: bool) -> "Parameters":
        treasury = os.environ.get("PM_TREASURY") or deployer
        if local:
            return cls(treasury, protocol_fee_bps=500, operator_fee_bps=1000, ledger=DEMO_LEDGER)
        return cls(treasury, protocol_fee_bps=300, operator_fee_bps=1000, ledger=TESTNET_LEDGER)


def is_local_chain() -> bool:
    return CONFIG.network_type == "development" or chain.id in LOCAL_CHAIN_IDS


def deployer_account():
    """The first local account on development networks, the PRIVATE_KEY account on live ones.

    The key is read from the environment rather than brownie's expanded `wallets.from_key`: brownie
    expands that setting with ./.env taking precedence over the environment, whereas `pm` (and
    brownie's own load of .env into the environment) let a set variable win."""
    if CONFIG.network_type == "development":
        return accounts[0]
    key = os.environ.get("PRIVATE_KEY", "").strip()
    if not key:
        raise SystemExit("deploy: set PRIVATE_KEY (environment or .env) to deploy on a live network")
    try:
        return accounts.add(key)
    except ValueError:
        raise SystemExit("deploy: PRIVATE_KEY is not a private key (64 hex digits)") from None


def confirmations() -> int:
    """Blocks each deployment transaction waits for before the next one is sent and recorded."""
    if is_local_chain():
        return 1
    value = os.environ.get("PM_CONFIRMATIONS", "2")
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"deploy: PM_CONFIRMATIONS must be a positive integer, not {value!r}")
    return int(value)


def record(contract) -> dict:
    """Address, deployment block and transaction, and the artifact holding the ABI.

    deployments/<chainId>.json is the one record of a deployment: brownie's own copy under
    build/deployments/ is dropped, because brownie reloads it on every connection to that chain id
    and refuses to connect once the chain no longer has the contracts (a restarted anvil)."""
    tx = contract.tx
    contract._delete_deployment()
    return {
        "address": contract.address,
        "block": tx.block_number,
        "transaction": tx.txid,
        "abi": f"build/contracts/{contract._name}.json",
    }


def deploy(deployer, params: Parameters, required_confs: int = 1) -> dict:
    """Deploy and wire the contracts; returns the deployment document."""
    sender = {"from": deployer, "required_confs": required_confs}
    registry = ModelRegistry.deploy(deployer, sender)
    router = RevenueRouter.deploy(
        deployer, registry, params.treasury, params.protocol_fee_bps, params.operator_fee_bps, sender
    )
    ledger = WorkLedger.deploy(deployer, registry, params.treasury, params.ledger.as_tuple(), sender)
    # Share clones trust the router and the ledger baked into the implementation, so it comes last.
    shares = ModelShares.deploy(router, ledger, sender)
    registry.wire(shares, ledger, sender)
    return {
        "chainId": chain.id,
        "network": network.show_active(),
        "deployer": deployer.address,
        "solcVersion": ModelRegistry._build["compiler"]["version"],
        "evmVersion": ModelRegistry._build["compiler"]["evm_version"],
        "contracts": {
            "ModelRegistry": record(registry),
            "RevenueRouter": record(router),
            "WorkLedger": record(ledger),
            "ModelSharesImplementation": record(shares),
        },
        "parameters": asdict(params),
        "confirmations": required_confs,
    }


def write(document: dict) -> Path:
    DEPLOYMENTS.mkdir(exist_ok=True)
    path = DEPLOYMENTS / f"{document['chainId']}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def skip_brownie_deployment_cache() -> None:
    """brownie 1.22.2's compiled `_add_deployment` raises a TypeError (in a background thread) when it
    caches a live-network deployment in its sqlite db; like build/deployments/ (see `record`), that
    cache is not needed, so it is skipped, which keeps live deployments free of a spurious traceback."""
    brownie_contract._add_deployment = lambda *args, **kwargs: None


def main():
    skip_brownie_deployment_cache()
    deployer = deployer_account()
    params = Parameters.for_network(deployer.address, is_local_chain())
    path = write(deploy(deployer, params, confirmations()))
    print(f"deployments written to {path}")
