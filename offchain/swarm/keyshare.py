"""Handing a stage's symmetric key to the accounts the chain says may hold it.

Checkpoints and traces are public ciphertext; the stage key (offchain.storage.crypto.StageKey) is
what makes them readable. The first member of a stage generates it; everyone who joins later, and
every validator who must replay the stage's claims, asks a live member for it over P2P:

    requester -> member:  {model_id, stage, recipient (X25519 public key), expires, requester,
                           signature = EIP-191 signature by the requester's eth key over all of it,
                           bound to the chain id and the WorkLedger address}
    member (StageKeyKeeper.grant): recovers the signer, checks the request is fresh and addressed to
                           this deployment, checks ON-CHAIN that the signer is a member of that very
                           stage (WorkLedger.stageOf) or a validator of it (WorkLedger.validatorOf),
                           and answers with the key sealed to `recipient` (crypto.seal_key).

A replayed request gains nothing: the answer opens only with the requester's X25519 private key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hivemind.dht.node import DHTNode
from hivemind.p2p import P2P

from offchain.chain.protocol import Protocol
from offchain.durable import write_atomic
from offchain.errors import UserError
from offchain.storage.crypto import (
    StageKey,
    generate_encryption_keypair,
    open_sealed_key,
    public_key_of,
    seal_key,
)
from offchain.storage.errors import DecryptionError
from offchain.swarm.client import PeerUnreachable, RemoteError, call
from offchain.swarm.discovery import lookup, stage_key

logger = logging.getLogger(__name__)

REQUEST_LIFETIME_S = 300
"""How long a signed key request stays valid (against the member's clock)."""


class KeyRequestRefused(ValueError):
    """The member will not hand out the key for this request (the reason says why)."""


class StageKeyUnavailable(UserError):
    """No live member of the stage granted the key."""


@dataclass(frozen=True)
class EncryptionKeypair:
    """This participant's X25519 key pair: the public half goes on-chain at `join` and into key
    requests; stage keys are sealed to it."""

    private: bytes
    public: bytes

    @classmethod
    def load_or_create(cls, path: Path) -> EncryptionKeypair:
        """Read the private key (hex) from `path`, or create it there (mode 0600, written atomically)."""
        if path.exists():
            try:
                private = bytes.fromhex(path.read_text().strip())
                return cls(private, public_key_of(private))
            except ValueError:
                raise UserError(f"{path} does not hold a 32-byte hex X25519 private key") from None
        private, public = generate_encryption_keypair()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, private.hex().encode())
        os.chmod(path, 0o600)
        return cls(private, public)


def _request_text(protocol: Protocol, model_id: int, stage: int, recipient: bytes, expires: int) -> str:
    """What the requester signs: bound to one deployment (chain id + ledger), stage and recipient."""
    return (
        f"Protocol Models stage key request\nchain {protocol.client.chain_id}\n"
        f"ledger {protocol.ledger.address.lower()}\n"
        f"model {model_id}\nstage {stage}\nrecipient {recipient.hex()}\nexpires {expires}"
    )


def make_key_request(
    protocol: Protocol, model_id: int, stage: int, account: LocalAccount, recipient: bytes
) -> dict[str, Any]:
    """A signed request for the key of (model_id, stage), to be sealed to `recipient`."""
    expires = int(time.time()) + REQUEST_LIFETIME_S
    text = _request_text(protocol, model_id, stage, recipient, expires)
    signature = account.sign_message(encode_defunct(text=text)).signature
    return {
        "model_id": model_id,
        "stage": stage,
        "recipient": recipient,
        "expires": expires,
        "requester": account.address,
        "signature": bytes(signature),
    }


class StageKeyKeeper:
    """A member's copy of its stage key, granted to whoever the chain says may hold it."""

    def __init__(self, protocol: Protocol, model_id: int, stage: int, key: StageKey) -> None:
        if (key.model_id, key.stage) != (model_id, stage):
            raise ValueError(f"key of model {key.model_id} stage {key.stage} kept for {model_id}/{stage}")
        self.protocol, self.model_id, self.stage, self.key = protocol, model_id, stage, key

    def grant(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"sealed": key sealed to the request's recipient}; KeyRequestRefused if not entitled.

        Blocking (reads the chain): call it from a thread."""
        model_id, stage = int(request["model_id"]), int(request["stage"])
        recipient, expires = bytes(request["recipient"]), int(request["expires"])
        requester = str(request["requester"])
        if (model_id, stage) != (self.model_id, self.stage):
            raise KeyRequestRefused(f"this member keeps model {self.model_id} stage {self.stage} only")
        now = int(time.time())
        if not now <= expires <= now + REQUEST_LIFETIME_S:
            raise KeyRequestRefused(f"request expired or too far ahead (expires {expires}, now {now})")
        text = _request_text(self.protocol, model_id, stage, recipient, expires)
        try:
            signer = Account.recover_message(encode_defunct(text=text), signature=bytes(request["signature"]))
        except (ValueError, TypeError) as error:
            raise KeyRequestRefused(f"bad signature: {error}") from None
        if signer.lower() != requester.lower():
            raise KeyRequestRefused(f"request signed by {signer}, names {requester}")
        if not self._entitled(signer):
            raise KeyRequestRefused(f"{signer} is neither a member of stage {stage} nor a validator")
        logger.info("granted the key of model %d stage %d to %s", model_id, stage, signer)
        return {"sealed": seal_key(recipient, self.key)}

    def _entitled(self, account: str) -> bool:
        client, ledger = self.protocol.client, self.protocol.ledger
        member, stage = client.call(ledger.functions.stageOf(self.model_id, account), action="stageOf")
        if member and stage == self.stage:
            return True
        registered, stage, _ = client.call(
            ledger.functions.validatorOf(self.model_id, account), action="validatorOf"
        )
        return bool(registered) and stage == self.stage


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
) -> StageKey:
    """Ask the stage's announced servers, one after another, until one grants the key.

    Retries discovery until `timeout` (a member may still be starting); StageKeyUnavailable then."""
    key = stage_key(spec_digest, model_id, stage)
    deadline = time.monotonic() + timeout
    refusals: list[str] = []
    while True:
        request = make_key_request(protocol, model_id, stage, account, keypair.public)
        request.update(model=spec_digest)
        for server in await lookup(dht_node, key):
            try:
                reply = await call(p2p, server.peer_id, "stage_key", request, timeout=30.0)
                granted = open_sealed_key(keypair.private, bytes(reply["sealed"]))
            except (PeerUnreachable, RemoteError, DecryptionError, KeyError) as error:
                refusals.append(f"{server.address}: {error}")
                continue
            if (granted.model_id, granted.stage) == (model_id, stage):
                logger.info("received the key of model %d stage %d from %s", model_id, stage, server.address)
                return granted
            refusals.append(f"{server.address}: sent a key of model {granted.model_id}/{granted.stage}")
        if time.monotonic() >= deadline:
            detail = refusals[-1] if refusals else "no member of the stage is announced in the swarm"
            raise StageKeyUnavailable(
                f"no member of model {model_id} stage {stage} granted its key in {timeout:.0f}s ({detail})"
            )
        await asyncio.sleep(1.0)
