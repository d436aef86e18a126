"""A swarm participant's identities: its eth account signs every pipeline message it sends and checks
the signature of every message it receives (the same key signs on-chain transactions); its libp2p
key pair (the peer id other peers authenticate it by) is kept in a file so the peer id a member
registered at `join` stays its own across restarts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from hivemind.p2p import PeerID
from hivemind.proto import crypto_pb2
from hivemind.utils.crypto import RSAPrivateKey

from offchain.durable import write_atomic
from offchain.errors import UserError
from offchain.keys import load_account
from offchain.model.records import MessageHeader, SignedMessage, message_payload, sha256_hex
from offchain.proofs.signing import recover_signer, sign_message
from offchain.swarm.wire import WireError


@dataclass(frozen=True)
class Identity:
    """An eth-account key pair; `address` is what peers see, the key never leaves the process
    (nor its repr)."""

    private_key: bytes = field(repr=False)
    address: str

    @classmethod
    def from_key(cls, private_key: str | bytes) -> Identity:
        try:
            account = Account.from_key(private_key)
        except (ValueError, TypeError) as error:
            raise UserError(f"invalid private key: {type(error).__name__}") from None
        return cls(bytes(account.key), account.address)

    @classmethod
    def load(cls, key_file: Path | None, key_env: str | None) -> Identity:
        """The participant's key from a key file (hex or keystore) or an environment variable
        (offchain.keys, the same rules as on-chain commands); a fresh key if neither is given."""
        if key_file is None and key_env is None:
            return cls.from_key(Account.create().key)
        account = load_account(key_file, key_env) if key_env else load_account(key_file)
        return cls(bytes(account.key), account.address)

    def sign(self, header: MessageHeader, parts: list[bytes]) -> dict[str, Any]:
        """A pipeline message ready for the wire: header, parts, sender and signature."""
        signature = sign_message(self.private_key, header, message_payload(*parts))
        return {
            "header": asdict(header),
            "parts": parts,
            "sender": self.address,
            "signature": bytes(signature),
        }


@dataclass(frozen=True)
class Received:
    """A pipeline message whose signature checked out: its parts and its trace entry."""

    header: MessageHeader
    parts: list[bytes]
    signed: SignedMessage


def verify(wire: Any) -> Received:
    """Parse a wire message and check that its signature recovers to the sender it names."""
    try:
        header = MessageHeader(**wire["header"])
        parts = [bytes(part) for part in wire["parts"]]
        sender, signature = str(wire["sender"]), bytes(wire["signature"])
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed pipeline message: {error!r}") from None
    payload = message_payload(*parts)
    try:
        signer = recover_signer(header, payload, signature)
    except (ValueError, TypeError) as error:
        raise WireError(f"bad signature on {header}: {error}") from None
    if signer.lower() != sender.lower():
        raise WireError(f"bad signature on {header}: signed by {signer}, claims {sender}")
    return Received(header, parts, SignedMessage(header, sha256_hex(payload), sender, signature))


def p2p_identity(path: Path) -> Path:
    """The libp2p private key at `path` (hivemind's protobuf format), created there if absent:
    written atomically with mode 0600 from the start. Returns `path` for `start_node`."""
    if path.exists():
        try:
            PeerID.from_identity(path.read_bytes())
        except Exception:  # noqa: BLE001 - protobuf/crypto raise many types for a damaged file
            raise UserError(f"{path} is not a libp2p identity (delete it to make a new peer id)") from None
        return path
    key = RSAPrivateKey()
    document = crypto_pb2.PrivateKey(key_type=crypto_pb2.KeyType.RSA, data=key.to_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, document.SerializeToString(), mode=0o600)
    return path
