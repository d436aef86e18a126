"""A swarm participant's eth-account identity: it signs every pipeline message it sends and checks
the signature of every message it receives (the same key later signs on-chain transactions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from offchain.errors import UserError
from offchain.keys import load_account
from offchain.model.records import MessageHeader, SignedMessage, message_payload, sha256_hex
from offchain.proofs.signing import recover_signer, sign_message
from offchain.swarm.wire import WireError


@dataclass(frozen=True)
class Identity:
    """An eth-account key pair; `address` is what peers see, the key never leaves the process."""

    private_key: bytes
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
