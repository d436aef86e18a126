"""Who may call what on a stage server: answered from the chain, or from an allow-list off-chain.

Being on the DHT grants nothing. libp2p authenticates the remote peer id of every stream
(`P2PContext.remote_id`); the question is which account that peer acts for, and what that
account may do for this model (see docs/architecture.md, "Authorization"):

- A **member** of stage s is identified by its peer id alone: the one its latest `Joined` event of
  the model registered (`WorkLedger.join(model, stage, peerId, ...)`), unless it `Left` since. Its
  libp2p identity is kept in its state folder (offchain.swarm.identity) so the peer id outlives
  restarts.
- A **driver** or **gateway** registers no peer id: it presents a *peer binding* with each request,
  an EIP-191 signature by its eth key over (chain id, ledger, model, peer id, expiry), so the
  address is bound to the peer that dialled, on this deployment only, until `expires` (chain
  time). The chain then says whether the address is one of the model's drivers
  (`ModelRegistry.isDriver`, set by the creator) or gateways (`isGateway`, set by the operator).
- **Off-chain** (`--model-spec`, no chain) every caller presents a binding and the allow-list names
  the addresses that may take part, in any role; an empty list admits nobody (default deny).

Chain facts are cached for `ttl` seconds; a peer or account not found refreshes the member index
at most once per `miss_interval`, so unknown peers cannot turn requests into RPC load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from hexbytes import HexBytes
from hivemind.p2p import PeerID
from web3 import Web3

from offchain.model.records import NO_LEDGER, MessageHeader

if TYPE_CHECKING:
    from offchain.chain.protocol import Protocol as ChainProtocol
    from offchain.swarm.identity import Identity

logger = logging.getLogger(__name__)

BINDING_LIFETIME_S = 3600
"""How long a peer binding is valid; a caller renews its own when less than a tenth is left."""
DEFAULT_TTL_S = 10.0
MISS_INTERVAL_S = 2.0
LOG_BLOCKS = 2_000


class Unauthorized(PermissionError):
    """The caller (or a message's signer) may not do this; the reason is logged and sent back."""


class Role(StrEnum):
    """What an RPC requires of its caller."""

    ANYONE = "anyone"
    MEMBER = "member of this stage"
    DRIVER = "driver"
    GATEWAY = "gateway"


RULES: dict[str, Role] = {
    "info": Role.ANYONE,
    "stage_key": Role.ANYONE,  # the request carries its own signature, checked against the chain
    "state": Role.MEMBER,
    "forward": Role.DRIVER,
    "forward_backward": Role.DRIVER,
    "backward": Role.DRIVER,
    "begin_round": Role.DRIVER,
    "apply_step": Role.DRIVER,
    "end_round": Role.DRIVER,
    "finish_round": Role.DRIVER,
    "abort_round": Role.DRIVER,
    "sync": Role.DRIVER,
    "infer": Role.GATEWAY,
}
"""Every stage-server RPC and who may call it (pipeline messages are checked by their signer too)."""


@dataclass(frozen=True)
class Domain:
    """What every binding, key request and pipeline message is bound to: one model of one deployment."""

    chain_id: int
    ledger: str
    model_id: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ledger", self.ledger.lower())

    @classmethod
    def of(cls, protocol: ChainProtocol, model_id: int) -> Domain:
        return cls(protocol.client.chain_id, protocol.ledger.address, model_id)

    @classmethod
    def offchain(cls, model_id: int) -> Domain:
        return cls(0, NO_LEDGER, model_id)

    @property
    def deployment(self) -> tuple[int, str]:
        """(chain id, ledger): what MessageHeader and replay_round call the deployment."""
        return self.chain_id, self.ledger

    def text(self) -> str:
        return f"chain {self.chain_id}\nledger {self.ledger}\nmodel {self.model_id}"

    def check_header(self, header: MessageHeader) -> None:
        if (header.chain_id, header.ledger, header.model_id) != (self.chain_id, self.ledger, self.model_id):
            raise Unauthorized(
                f"message for chain {header.chain_id} ledger {header.ledger} model {header.model_id}, this "
                f"stage serves chain {self.chain_id} ledger {self.ledger} model {self.model_id}"
            )


# ---- peer bindings ----------------------------------------------------------------------------


def _binding_text(domain: Domain, peer_id: str, expires: int) -> str:
    return f"Protocol Models peer binding\n{domain.text()}\npeer {peer_id}\nexpires {expires}"


def make_binding(identity: Identity, domain: Domain, peer_id: str, expires: int) -> dict[str, Any]:
    """`identity`'s address bound to `peer_id` for `domain` until `expires` (unix seconds, chain time)."""
    text = _binding_text(domain, peer_id, expires)
    signature = Account.sign_message(encode_defunct(text=text), identity.private_key).signature
    return {"address": identity.address, "peer": peer_id, "expires": expires, "signature": bytes(signature)}


def verify_binding(binding: Any, domain: Domain, peer_id: str, now: int) -> str:
    """The address `binding` binds to `peer_id` (the authenticated caller); Unauthorized otherwise."""
    try:
        address, peer = str(binding["address"]), str(binding["peer"])
        expires, signature = int(binding["expires"]), bytes(binding["signature"])
    except (KeyError, TypeError, ValueError):
        raise Unauthorized("malformed peer binding") from None
    if peer != peer_id:
        raise Unauthorized(f"peer binding is for peer {peer[-8:]}, the caller is {peer_id[-8:]}")
    if not now <= expires <= now + 2 * BINDING_LIFETIME_S:
        raise Unauthorized(f"peer binding expired or too far ahead (expires {expires}, chain time {now})")
    try:
        signer = Account.recover_message(
            encode_defunct(text=_binding_text(domain, peer_id, expires)), signature=signature
        )
    except (ValueError, TypeError):
        raise Unauthorized("peer binding has a malformed signature") from None
    if signer.lower() != address.lower():
        raise Unauthorized(f"peer binding signed by {signer} for another deployment, peer or address")
    return signer


class Binder:
    """This process's own peer binding, renewed before it expires; attached to every request it sends."""

    def __init__(self, identity: Identity, domain: Domain, peer_id: str, clock: Callable[[], int]) -> None:
        self.identity, self.domain, self.peer_id, self.clock = identity, domain, peer_id, clock
        self._binding: dict[str, Any] | None = None
        self._renew_at = float("-inf")
        self._lock = threading.Lock()

    def binding(self) -> dict[str, Any]:
        """The current binding; reads the clock (maybe the chain: blocking) only when renewing it."""
        with self._lock:
            if self._binding is None or time.monotonic() >= self._renew_at:
                expires = self.clock() + BINDING_LIFETIME_S
                self._binding = make_binding(self.identity, self.domain, self.peer_id, expires)
                self._renew_at = time.monotonic() + BINDING_LIFETIME_S * 0.9
            return self._binding


# ---- facts --------------------------------------------------------------------------------------


class Facts(Protocol):
    """Where the authorizer learns who is who (blocking: call from a thread)."""

    registers_peers: bool
    """True when members are identified by the peer id they registered (on-chain)."""

    def now(self) -> int: ...

    def account_of_peer(self, peer_id: str) -> str | None: ...

    def is_member(self, account: str, stage: int) -> bool: ...

    def is_driver(self, account: str) -> bool: ...

    def is_gateway(self, account: str) -> bool: ...


class ChainClock:
    """Chain time: the latest block's timestamp, re-read at most every `ttl` seconds and carried
    forward with the monotonic clock in between (never the local wall clock)."""

    def __init__(self, protocol: ChainProtocol, ttl: float = DEFAULT_TTL_S) -> None:
        self.client, self.ttl = protocol.client, ttl
        self._sample: tuple[int, float] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            if self._sample is None or time.monotonic() - self._sample[1] > self.ttl:
                block = self.client.rpc("get_block", lambda: self.client.w3.eth.get_block("latest"))
                self._sample = (int(block["timestamp"]), time.monotonic())
            timestamp, taken = self._sample
            return timestamp + int(time.monotonic() - taken)


class ChainFacts:
    """Members from the ledger's Joined/Left events of the model (an index kept up to date
    incrementally), drivers and gateways from the registry, each cached for `ttl` seconds."""

    registers_peers = True

    def __init__(
        self,
        protocol: ChainProtocol,
        model_id: int,
        *,
        ttl: float = DEFAULT_TTL_S,
        miss_interval: float = MISS_INTERVAL_S,
    ) -> None:
        self.protocol, self.model_id, self.ttl, self.miss_interval = protocol, model_id, ttl, miss_interval
        self.client, self.ledger, self.registry = protocol.client, protocol.ledger, protocol.registry
        self.now = ChainClock(protocol, ttl)
        self._events = {
            bytes(HexBytes(event.topic)): event
            for event in (self.ledger.events.Joined(), self.ledger.events.Left())
        }
        self._members: dict[str, tuple[int, str]] = {}  # account -> (stage, base58 peer id)
        self._next_block = protocol.first_block()
        self._refreshed = float("-inf")
        self._roles: dict[tuple[str, str], tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def _refresh(self, *, miss: bool) -> None:
        """Scan the blocks since the last scan; on a miss only if the last scan is `miss_interval` old."""
        age = time.monotonic() - self._refreshed
        if age < (self.miss_interval if miss else self.ttl):
            return
        head = self.client.rpc("block_number", lambda: self.client.w3.eth.block_number)
        model_topic = "0x" + self.model_id.to_bytes(32, "big").hex()
        topics = [["0x" + topic.hex() for topic in self._events], model_topic]
        while self._next_block <= head:
            to_block = min(head, self._next_block + LOG_BLOCKS - 1)
            query = {"fromBlock": self._next_block, "toBlock": to_block, "address": self.ledger.address}
            logs = self.client.rpc(
                "get_logs", lambda q=query: self.client.w3.eth.get_logs({**q, "topics": topics})
            )
            for entry in sorted(logs, key=lambda item: (item["blockNumber"], item["logIndex"])):
                event = self._events[bytes(entry["topics"][0])].process_log(entry)
                args = event["args"]
                if event["event"] == "Joined":
                    peer = _peer_text(bytes(args["peerId"]))
                    self._members[args["account"].lower()] = (int(args["stage"]), peer)
                else:
                    self._members.pop(args["account"].lower(), None)
            self._next_block = to_block + 1
        self._refreshed = time.monotonic()

    def account_of_peer(self, peer_id: str) -> str | None:
        with self._lock:
            for miss in (False, True):
                self._refresh(miss=miss)
                for account, (_, peer) in self._members.items():
                    if peer == peer_id:
                        return account
            return None

    def is_member(self, account: str, stage: int) -> bool:
        with self._lock:
            for miss in (False, True):
                self._refresh(miss=miss)
                if self._members.get(account.lower(), (None,))[0] == stage:
                    return True
            return False

    def members(self, stage: int) -> list[str]:
        """The stage's current members (lowercase addresses)."""
        with self._lock:
            self._refresh(miss=False)
            return sorted(account for account, (s, _) in self._members.items() if s == stage)

    def _role(self, name: str, account: str, read: Callable[[], bool]) -> bool:
        with self._lock:
            cached = self._roles.get((name, account.lower()))
            if cached is not None and time.monotonic() - cached[1] < self.ttl:
                return cached[0]
            value = bool(read())
            self._roles[name, account.lower()] = (value, time.monotonic())
            return value

    def is_driver(self, account: str) -> bool:
        fn = self.registry.functions.isDriver(self.model_id, _checksum(account))
        return self._role("driver", account, lambda: self.client.call(fn, action="isDriver"))

    def is_gateway(self, account: str) -> bool:
        fn = self.registry.functions.isGateway(self.model_id, _checksum(account))
        return self._role("gateway", account, lambda: self.client.call(fn, action="isGateway"))


class AllowList:
    """Off-chain: the listed addresses may take part, in any role; nobody else (an empty list: nobody)."""

    registers_peers = False

    def __init__(self, addresses: Collection[str]) -> None:
        self.addresses = frozenset(address.lower() for address in addresses)

    def now(self) -> int:
        return int(time.time())  # no chain to take time from

    def account_of_peer(self, peer_id: str) -> str | None:
        return None

    def is_member(self, account: str, stage: int) -> bool:
        return account.lower() in self.addresses

    def is_driver(self, account: str) -> bool:
        return account.lower() in self.addresses

    def is_gateway(self, account: str) -> bool:
        return account.lower() in self.addresses


def _peer_text(peer_id: bytes) -> str:
    try:
        return PeerID(peer_id).to_base58()
    except Exception:  # noqa: BLE001 - a member may register any bytes; those match no peer
        return "0x" + peer_id.hex()


def _checksum(account: str) -> str:
    return Web3.to_checksum_address(account)


# ---- the authorizer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated remote peer and the account it acts for (None: nobody we know)."""

    peer_id: str
    account: str | None
    registered: bool  # the account was found by its on-chain peer id (a member), not by a binding

    def __str__(self) -> str:
        return f"peer {self.peer_id[-8:]} ({self.account or 'unknown account'})"


class Authorizer:
    """Answers "may peer P call RPC X of stage S" and "may account A send this message" (blocking)."""

    def __init__(self, facts: Facts, domain: Domain) -> None:
        self.facts, self.domain = facts, domain

    def identify(self, peer_id: str, binding: Any) -> Caller:
        """Which account `peer_id` acts for: its registered membership, else its binding if valid."""
        if self.facts.registers_peers and (account := self.facts.account_of_peer(peer_id)) is not None:
            return Caller(peer_id, account, registered=True)
        if binding is None:
            return Caller(peer_id, None, registered=False)
        account = verify_binding(binding, self.domain, peer_id, self.facts.now())
        return Caller(peer_id, account, registered=False)

    def admit(self, method: str, peer_id: str, binding: Any, stage: int) -> Caller:
        """The caller if it may call `method` of stage `stage`; Unauthorized with the reason otherwise."""
        role = RULES.get(method)
        if role is None:
            raise Unauthorized(f"unknown RPC {method}")
        if role is Role.ANYONE:
            return Caller(peer_id, None, registered=False)
        caller = self.identify(peer_id, binding)
        if not self.holds(caller, role, stage):
            raise Unauthorized(
                f"{caller} is not a {role.value} of model {self.domain.model_id} stage {stage}"
            )
        return caller

    def holds(self, caller: Caller, role: Role, stage: int) -> bool:
        if caller.account is None:
            return False
        if role is Role.MEMBER:
            registered = caller.registered or not self.facts.registers_peers
            return registered and self.facts.is_member(caller.account, stage)
        if role is Role.DRIVER:
            return self.facts.is_driver(caller.account)
        if role is Role.GATEWAY:
            return self.facts.is_gateway(caller.account)
        return True

    def check_message(self, header: MessageHeader, signer: str) -> None:
        """A pipeline message into stage `header.stage` must be bound to this deployment and model and
        signed by the stage that sends it: forward into stage 0 by a driver, forward into stage s by a
        member of s-1, backward into stage s by a member of s+1."""
        self.domain.check_header(header)
        if header.direction == "forward" and header.stage == 0:
            allowed, who = self.facts.is_driver(signer), "a driver"
        elif header.direction == "forward":
            allowed, who = (
                self.facts.is_member(signer, header.stage - 1),
                f"a member of stage {header.stage - 1}",
            )
        else:
            allowed, who = (
                self.facts.is_member(signer, header.stage + 1),
                f"a member of stage {header.stage + 1}",
            )
        if not allowed:
            raise Unauthorized(
                f"{header.direction} message to stage {header.stage} signed by {signer}, not {who}"
            )


@dataclass(frozen=True)
class Access:
    """How a stage server admits peers and how this process binds itself: the facts and the domain."""

    facts: Facts
    domain: Domain

    @classmethod
    def on_chain(cls, protocol: ChainProtocol, model_id: int) -> Access:
        return cls(ChainFacts(protocol, model_id), Domain.of(protocol, model_id))

    @classmethod
    def off_chain(cls, model_id: int, allowed: Collection[str]) -> Access:
        return cls(AllowList(allowed), Domain.offchain(model_id))

    def authorizer(self) -> Authorizer:
        return Authorizer(self.facts, self.domain)

    def binder(self, identity: Identity, peer_id: str) -> Binder:
        return Binder(identity, self.domain, peer_id, self.facts.now)


class RateLimiter:
    """A token bucket per key (a peer id, a client address): `rate` tokens per second, `burst` at most."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str) -> float:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # a flood of fresh keys: start over rather than grow without bound
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        self._buckets[key] = (tokens, now)
        return tokens

    def has(self, key: str) -> bool:
        """Whether `key` has a token left (without spending it)."""
        return self._tokens(key) >= 1.0

    def spend(self, key: str) -> None:
        tokens = self._tokens(key)
        self._buckets[key] = (max(tokens - 1.0, 0.0), time.monotonic())

    def allow(self, key: str) -> bool:
        """Spend a token of `key` if it has one."""
        if not self.has(key):
            return False
        self.spend(key)
        return True
