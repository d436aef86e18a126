"""The one document the page reads at start-up: chain, RPC URL, contract addresses, gateways.

It holds only public facts (addresses, URLs, the chain id); the page never sees a key. The chain
id is asked from the RPC and the deployment record must match a live registry there, so a page
is never built against a restarted chain or another network's addresses.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from offchain.chain.client import ChainClient
from offchain.chain.protocol import Protocol
from offchain.errors import UserError

CONTRACTS = ("ModelRegistry", "RevenueRouter", "WorkLedger")
LOCAL_CHAIN_IDS = frozenset({1337, 31337})


class NativeCurrency(BaseModel):
    name: str = "Ether"
    symbol: str = "ETH"
    decimals: int = 18


class WebConfig(BaseModel):
    """config.json; field names are the page's (camelCase, as EIP-3085's wallet_addEthereumChain)."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    chainId: int
    chainName: str
    rpcUrl: str
    nativeCurrency: NativeCurrency = NativeCurrency()
    contracts: dict[str, str]
    firstBlock: int
    gateways: tuple[str, ...] = ()

    def origins(self) -> list[str]:
        """The origins the page talks to besides its own (the CSP's connect-src)."""
        return sorted({origin_of(url) for url in (self.rpcUrl, *self.gateways)})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def checked_url(url: str, what: str) -> str:
    """An http(s) URL with a host, without a trailing slash; anything else is a UserError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{what} must be an http:// or https:// URL, not {url!r}")
    return url.rstrip("/")


def load_web_config(rpc_url: str, deployments: Path, gateways: list[str]) -> WebConfig:
    """The page's config for the chain behind `rpc_url`, from its deployment record."""
    rpc_url = checked_url(rpc_url, "--rpc-url")
    checked_gateways = tuple(checked_url(url, "--gateway") for url in gateways)
    protocol = Protocol.load(ChainClient(rpc_url, retry_deadline_s=5.0), deployments)
    chain_id = protocol.client.chain_id
    contracts = protocol.deployment["contracts"]
    missing = [name for name in CONTRACTS if name not in contracts]
    if missing:
        raise UserError(f"{deployments / f'{chain_id}.json'} names no {', '.join(missing)}")
    local = " (local)" if chain_id in LOCAL_CHAIN_IDS else ""
    return WebConfig(
        chainId=chain_id,
        chainName=f"Protocol Models chain {chain_id}{local}",
        rpcUrl=rpc_url,
        contracts={name: contracts[name]["address"] for name in CONTRACTS},
        firstBlock=protocol.first_block(),
        gateways=checked_gateways,
    )
