"""Handing a stage's symmetric keys to the accounts the chain says may hold them, authenticated both ways.

Checkpoints and traces are public ciphertext; a stage key (offchain.storage.crypto.StageKey) is what
makes them readable. The first member of a stage generates one; everyone who joins later, and every
validator of that stage, asks a live member for it over P2P:

    requester -> member:  {model_id, stage, key_id (optional), recipient (X25519 public key), expires,
                           requester, signature}: an EIP-191 signature by the requester's eth key over
                           all of it, bound to the chain id, the WorkLedger address and the model;
                           `expires` is chain time (the latest block), never the local clock.
    member (StageKeyKeeper.grant): recovers the signer, checks the request is fresh (chain time) and
                           addressed to this deployment, checks ON-CHAIN that the signer is a member of
                           that very stage (WorkLedger.stageOf) or a validator of it (validatorOf: one
                           stage per model), and answers with the key sealed to `recipient`, plus its
                           own signature over (deployment, stage, key id, created block, recipient,
                           sha256 of the sealed box, the request's expiry).
    requester (request_stage_key): checks that signature, that its signer is a member of the stage
                           ON-CHAIN, that the box opens to a key of this model and stage with the key
                           id it asked for, and, when the stage has a finalized checkpoint, that the
                           key decrypts it to the digest on-chain. Only then is the key returned.

A replayed request gains nothing: the answer opens only with the requester's X25519 private key. A
key handed out by a non-member, or one that does not open the stage's checkpoint, is never stored.

Rotation. A member keeps a keyring (`StageKeyring`, 0600): every key it has held, each with the
block it was created at. Before it encrypts a new checkpoint it asks the chain whether a member of
its stage left or was slashed after its current key was created (`departed_since`); if so it
creates a new key, which becomes current. The grant checks membership when it answers, so a leaver
never receives a key created after it left. What a leaver keeps: every key it held, hence every
checkpoint and trace encrypted before the rotation (state it trained, or could have copied, while a
member); nothing encrypted after. Checkpoints name their key by id (the ciphertext header), so a
requester asks for the id it needs (the finalized checkpoint's by default).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from hivemind.dht.node import DHTNode
from hivemind.p2p import P2P

from offchain.chain.protocol import Protocol
from offchain.durable import write_atomic
from offchain.errors import UserError
from offchain.storage.cids import bytes32_to_cid
from offchain.storage.crypto import (
    HEADER_LEN,
    StageKey,
    decrypt_checkpoint,
    generate_encryption_keypair,
    open_sealed_key,
    public_key_of,
    seal_key,
)
from offchain.storage.errors import DecryptionError, StorageError
from offchain.swarm.authz import ChainClock, Domain
from offchain.swarm.client import PeerUnreachable, RemoteError, call
from offchain.swarm.discovery import lookup, stage_key

if TYPE_CHECKING:
    from offchain.storage.store import Store

logger = logging.getLogger(__name__)

REQUEST_LIFETIME_S = 300
"""How long a signed key request stays valid, in chain time."""
_KEY_ID_AT = slice(5, 13)  # the key id inside a checkpoint ciphertext header (offchain.storage.crypto)


class KeyRequestRefused(ValueError):
    """The member will not hand out the key for this request (the reason says why)."""


class StageKeyUnavailable(UserError):
    """No live member of the stage granted a key that checked out."""


@dataclass(frozen=True)
class EncryptionKeypair:
    """This participant's X25519 key pair: the public half goes on-chain at `join` and into key
    requests; stage keys are sealed to it. `repr` shows the public half only."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def load_or_create(cls, path: Path) -> EncryptionKeypair:
        """Read the private key (hex) from `path`, or create it there (0600 from the start, atomically)."""
        if path.exists():
            try:
                private = bytes.fromhex(path.read_text().strip())
                return cls(private, public_key_of(private))
            except ValueError:
                raise UserError(f"{path} does not hold a 32-byte hex X25519 private key") from None
        private, public = generate_encryption_keypair()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, private.hex().encode(), mode=0o600)
        return cls(private, public)


# ---- the keyring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldKey:
    """A stage key and the block it was created at (rotation compares departures with it)."""

    key: StageKey
    created_block: int


class StageKeyring:
    """Every key of one (model, stage) this participant holds, the newest current; kept in a file
    written atomically with mode 0600 (the secrets never appear in a repr or a log line)."""

    def __init__(self, path: Path, model_id: int, stage: int) -> None:
        self.path, self.model_id, self.stage = path, model_id, stage
        self.keys: list[HeldKey] = []
        if path.is_file():
            try:
                entries = msgpack.unpackb(path.read_bytes(), raw=False)
                self.keys = [
                    HeldKey(StageKey(model_id, stage, bytes(e["secret"])), e["block"]) for e in entries
                ]
            except (ValueError, TypeError, KeyError, msgpack.UnpackException):
                raise UserError(f"{path} is not a stage keyring of model {model_id} stage {stage}") from None

    def __repr__(self) -> str:
        return f"StageKeyring(model_id={self.model_id}, stage={self.stage}, keys={len(self.keys)})"

    @property
    def current(self) -> HeldKey | None:
        return self.keys[-1] if self.keys else None

    def get(self, key_id: bytes) -> HeldKey | None:
        return next((held for held in self.keys if held.key.key_id == key_id), None)

    def add(self, held: HeldKey, *, current: bool = False) -> None:
        """Keep `held` (made current if `current` or if it is the first); persisted at once."""
        existing = self.get(held.key.key_id)
        if existing is not None:
            self.keys.remove(existing)
        if current or not self.keys:
            self.keys.append(held)
        else:
            self.keys.insert(len(self.keys) - 1, held)
        entries = [{"secret": h.key.secret, "block": h.created_block} for h in self.keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, msgpack.packb(entries, use_bin_type=True), mode=0o600)


def departed_since(protocol: Protocol, model_id: int, stage: int, block: int) -> list[str]:
    """Accounts that stopped being trusted with the stage's key after `block`: members of the stage that
    left it, and members of it that were slashed (lowercase addresses)."""
    ledger, client = protocol.ledger, protocol.client
    head = client.rpc("block_number", lambda: client.w3.eth.block_number)
    if head <= block:
        return []
    left = ledger.events.Left()
    slashed = ledger.events.Slashed()
    model_topic = "0x" + model_id.to_bytes(32, "big").hex()
    stage_topic = "0x" + stage.to_bytes(32, "big").hex()
    span = {"fromBlock": block + 1, "toBlock": head, "address": ledger.address}
    departed = {
        left.process_log(entry)["args"]["account"].lower()
        for entry in client.rpc(
            "get_logs",
            lambda: client.w3.eth.get_logs({**span, "topics": [_topic(left), model_topic, stage_topic]}),
        )
    }
    members = {account.lower() for account in client.call(ledger.functions.membersOf(model_id, stage))}
    for entry in client.rpc(
        "get_logs", lambda: client.w3.eth.get_logs({**span, "topics": [_topic(slashed)]})
    ):
        loser = slashed.process_log(entry)["args"]["account"].lower()
        if loser in members:
            departed.add(loser)
    return sorted(departed)


def _topic(event: Any) -> str:
    return "0x" + bytes(HexBytes(event.topic)).hex()


def rotate_if_departed(protocol: Protocol, keyring: StageKeyring) -> StageKey:
    """The key to encrypt the next checkpoint with: the current one, or a new one if a member of the
    stage left or was slashed since the current one was created. Blocking (reads the chain)."""
    current = keyring.current
    if current is None:
        raise ValueError("an empty keyring has no current key")
    departed = departed_since(protocol, keyring.model_id, keyring.stage, current.created_block)
    if not departed:
        return current.key
    block = protocol.client.rpc("block_number", lambda: protocol.client.w3.eth.block_number)
    fresh = HeldKey(StageKey.generate(keyring.model_id, keyring.stage), block)
    keyring.add(fresh, current=True)
    logger.info(
        "stage key of model %d stage %d rotated to %s: %s left or were slashed",
        keyring.model_id,
        keyring.stage,
        fresh.key.key_id.hex(),
        ", ".join(departed),
    )
    return fresh.key


# ---- requests and grants --------------------------------------------------------------------------


def _request_text(domain: Domain, stage: int, key_id: bytes, recipient: bytes, expires: int) -> str:
    """What the requester signs: one deployment and model, one stage, key and recipient."""
    return (
        f"Protocol Models stage key request\n{domain.text()}\nstage {stage}\n"
        f"key {key_id.hex() or 'current'}\nrecipient {recipient.hex()}\nexpires {expires}"
    )


def _grant_text(
    domain: Domain, stage: int, held: HeldKey, recipient: bytes, sealed: bytes, expires: int
) -> str:
    """What the granting member signs: it vouches for exactly this sealed box, for this request."""
    return (
        f"Protocol Models stage key grant\n{domain.text()}\nstage {stage}\nkey {held.key.key_id.hex()}\n"
        f"created {held.created_block}\nrecipient {recipient.hex()}\n"
        f"sealed {hashlib.sha256(sealed).hexdigest()}\nexpires {expires}"
    )


def make_key_request(
    protocol: Protocol,
    model_id: int,
    stage: int,
    account: LocalAccount,
    recipient: bytes,
    *,
    key_id: bytes = b"",
    now: int | None = None,
) -> dict[str, Any]:
    """A signed request for the key `key_id` (b"": the current one) of (model_id, stage), to be sealed
    to `recipient`; it expires REQUEST_LIFETIME_S after chain time `now` (read from the chain if None)."""
    now = ChainClock(protocol)() if now is None else now
    expires = now + REQUEST_LIFETIME_S
    text = _request_text(Domain.of(protocol, model_id), stage, key_id, recipient, expires)
    signature = account.sign_message(encode_defunct(text=text)).signature
    return {
        "model_id": model_id,
        "stage": stage,
        "key_id": key_id,
        "recipient": recipient,
        "expires": expires,
        "requester": account.address,
        "signature": bytes(signature),
    }


class StageKeyKeeper:
    """A member's keyring, granted to whoever the chain says may hold it (see the module docstring)."""

    def __init__(self, protocol: Protocol, keyring: StageKeyring, account: LocalAccount) -> None:
        if keyring.current is None:
            raise ValueError(f"no key of model {keyring.model_id} stage {keyring.stage} to keep")
        self.protocol, self.keyring, self.account = protocol, keyring, account
        self.model_id, self.stage = keyring.model_id, keyring.stage
        self.domain = Domain.of(protocol, self.model_id)
        self.clock = ChainClock(protocol)

    def __repr__(self) -> str:
        return f"StageKeyKeeper(model_id={self.model_id}, stage={self.stage}, member={self.account.address})"

    def grant(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"sealed", "member", "created", "signature"}; KeyRequestRefused if not entitled.

        Blocking (reads the chain): call it from a thread."""
        try:
            model_id, stage = int(request["model_id"]), int(request["stage"])
            key_id, recipient = bytes(request["key_id"]), bytes(request["recipient"])
            expires, requester = int(request["expires"]), str(request["requester"])
            signature = bytes(request["signature"])
        except (KeyError, TypeError, ValueError):
            raise KeyRequestRefused("malformed key request") from None
        if (model_id, stage) != (self.model_id, self.stage):
            raise KeyRequestRefused(f"this member keeps model {self.model_id} stage {self.stage} only")
        now = self.clock()
        if not now <= expires <= now + 2 * REQUEST_LIFETIME_S:
            raise KeyRequestRefused(f"request expired or too far ahead (expires {expires}, chain time {now})")
        text = _request_text(self.domain, stage, key_id, recipient, expires)
        try:
            signer = Account.recover_message(encode_defunct(text=text), signature=signature)
        except (ValueError, TypeError) as error:
            raise KeyRequestRefused(f"bad signature: {error}") from None
        if signer.lower() != requester.lower():
            raise KeyRequestRefused(f"request signed by {signer}, names {requester}")
        held = self.keyring.get(key_id) if key_id else self.keyring.current
        if held is None:
            raise KeyRequestRefused(f"this member holds no key {key_id.hex()} of stage {stage}")
        if not self._entitled(signer):
            raise KeyRequestRefused(f"{signer} is neither a member nor a validator of stage {stage}")
        sealed = seal_key(recipient, held.key)
        grant_text = _grant_text(self.domain, stage, held, recipient, sealed, expires)
        logger.info(
            "granted key %s of model %d stage %d to %s", held.key.key_id.hex(), model_id, stage, signer
        )
        return {
            "sealed": sealed,
            "member": self.account.address,
            "created": held.created_block,
            "signature": bytes(self.account.sign_message(encode_defunct(text=grant_text)).signature),
        }

    def _entitled(self, account: str) -> bool:
        """A member of this stage, or a validator of this stage (one stage per model, like members)."""
        client, ledger = self.protocol.client, self.protocol.ledger
        member, stage = client.call(ledger.functions.stageOf(self.model_id, account), action="stageOf")
        if member and stage == self.stage:
            return True
        registered, stage, _ = client.call(
            ledger.functions.validatorOf(self.model_id, account), action="validatorOf"
        )
        return bool(registered) and stage == self.stage


@dataclass(frozen=True)
class FinalizedCheckpoint:
    """The stage's finalized checkpoint as the chain names it, and the key id its ciphertext names."""

    cid: str
    digest: bytes
    key_id: bytes


def key_for_checkpoint(keyring: StageKeyring, store: Store, cid: str) -> StageKey:
    """The key of `keyring` that checkpoint `cid` was encrypted with (its header names it)."""
    key_id = bytes(store.get(cid)[:HEADER_LEN])[_KEY_ID_AT]
    held = keyring.get(key_id)
    if held is None:
        raise StageKeyUnavailable(
            f"checkpoint {cid} is encrypted under key {key_id.hex()}, which this participant does not hold"
        )
    return held.key


def finalized_checkpoint(
    protocol: Protocol, store: Store, model_id: int, stage: int
) -> FinalizedCheckpoint | None:
    """None before the stage's first finalized checkpoint. Blocking (chain and store)."""
    cid, digest, _ = protocol.client.call(
        protocol.registry.functions.checkpointOf(model_id, stage), action="checkpointOf"
    )
    if not any(cid):
        return None
    text = bytes32_to_cid(bytes(cid))
    header = bytes(store.get(text)[:HEADER_LEN])
    return FinalizedCheckpoint(text, bytes(digest), header[_KEY_ID_AT])


def check_grant(
    protocol: Protocol,
    store: Store | None,
    request: dict[str, Any],
    reply: dict[str, Any],
    keypair: EncryptionKeypair,
    checkpoint: FinalizedCheckpoint | None,
) -> HeldKey:
    """The key in `reply` once it checks out (module docstring); KeyRequestRefused saying why not.
    Blocking (chain, store)."""
    model_id, stage, key_id = request["model_id"], request["stage"], request["key_id"]
    domain = Domain.of(protocol, model_id)
    try:
        sealed, member, created = bytes(reply["sealed"]), str(reply["member"]), int(reply["created"])
        held = HeldKey(open_sealed_key(keypair.private, sealed), created)
        text = _grant_text(domain, stage, held, request["recipient"], sealed, request["expires"])
        signer = Account.recover_message(encode_defunct(text=text), signature=bytes(reply["signature"]))
    except (KeyError, TypeError, ValueError, DecryptionError) as error:
        raise KeyRequestRefused(f"unusable grant: {type(error).__name__}: {error}") from None
    if signer.lower() != member.lower():
        raise KeyRequestRefused(f"grant signed by {signer}, names {member}")
    client, ledger = protocol.client, protocol.ledger
    is_member, member_stage = client.call(ledger.functions.stageOf(model_id, signer), action="stageOf")
    if not (is_member and member_stage == stage):
        raise KeyRequestRefused(f"grant signed by {signer}, not a member of stage {stage} on-chain")
    key = held.key
    if (key.model_id, key.stage) != (model_id, stage) or (key_id and key.key_id != key_id):
        raise KeyRequestRefused(
            f"{signer} sent key {key.key_id.hex()} of model {key.model_id} stage {key.stage}"
        )
    if checkpoint is not None and store is not None and key.key_id == checkpoint.key_id:
        try:
            state = decrypt_checkpoint(key, store.get(checkpoint.cid))
        except (DecryptionError, StorageError) as error:
            raise KeyRequestRefused(
                f"the key from {signer} does not open checkpoint {checkpoint.cid}: {error}"
            ) from None
        if hashlib.sha256(state).digest() != checkpoint.digest:
            raise KeyRequestRefused(
                f"checkpoint {checkpoint.cid} opened with {signer}'s key is not the digest on-chain"
            )
    return held


async def request_stage_key(
    p2p: P2P,
    dht_node: DHTNode,
    protocol: Protocol,
    spec_digest: str,
    model_id: int,
    stage: int,
    account: LocalAccount,
    keypair: EncryptionKeypair,
    *,
    timeout: float = 60.0,
    store: Store | None = None,
    key_id: bytes | None = None,
) -> StageKey:
    """A verified key of (model_id, stage): `key_id`, or by default the finalized checkpoint's (which
    must then open that checkpoint, read from `store`), or the current key before the first checkpoint.

    Asks the stage's announced servers, one after another, until one grant checks out (check_grant);
    retries discovery until `timeout` (a member may still be starting); StageKeyUnavailable then."""
    return (
        await request_held_key(
            p2p,
            dht_node,
            protocol,
            spec_digest,
            model_id,
            stage,
            account,
            keypair,
            timeout=timeout,
            store=store,
            key_id=key_id,
        )
    ).key


async def request_held_key(
    p2p: P2P,
    dht_node: DHTNode,
    protocol: Protocol,
    spec_digest: str,
    model_id: int,
    stage: int,
    account: LocalAccount,
    keypair: EncryptionKeypair,
    *,
    timeout: float = 60.0,
    store: Store | None = None,
    key_id: bytes | None = None,
) -> HeldKey:
    """request_stage_key, with the block the key was created at (for a keyring)."""
    checkpoint = (
        await asyncio.to_thread(finalized_checkpoint, protocol, store, model_id, stage)
        if store is not None
        else None
    )
    wanted = key_id if key_id is not None else checkpoint.key_id if checkpoint is not None else b""
    dht_key = stage_key(spec_digest, model_id, stage)
    deadline = time.monotonic() + timeout
    refusals: list[str] = []
    while True:
        request = await asyncio.to_thread(
            make_key_request, protocol, model_id, stage, account, keypair.public, key_id=wanted
        )
        for server in await lookup(dht_node, dht_key):
            try:
                reply = await call(
                    p2p, server.peer_id, "stage_key", {**request, "model": spec_digest}, timeout=30.0
                )
                held = await asyncio.to_thread(
                    check_grant, protocol, store, request, reply, keypair, checkpoint
                )
            except (PeerUnreachable, RemoteError, KeyRequestRefused) as error:
                refusals.append(f"{server.address}: {error}")
                logger.warning(
                    "key of model %d stage %d from %s refused: %s", model_id, stage, server.address, error
                )
                continue
            logger.info(
                "received key %s of model %d stage %d from %s",
                held.key.key_id.hex(),
                model_id,
                stage,
                server.address,
            )
            return held
        if time.monotonic() >= deadline:
            detail = refusals[-1] if refusals else "no member of the stage is announced in the swarm"
            raise StageKeyUnavailable(
                f"no member of model {model_id} stage {stage} granted its key in {timeout:.0f}s ({detail})"
            )
        await asyncio.sleep(1.0)
