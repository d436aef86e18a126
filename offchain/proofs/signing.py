"""Message signatures with the worker's Ethereum key, so the identity that signs messages
between stages is the one that stakes and claims on-chain.

Signed: EIP-191 personal message of keccak256(header.encode() + sha256(payload)), where payload =
offchain.model.records.message_payload(...) of the message's parts."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct
from eth_utils import keccak

from offchain.model.records import MessageHeader, sha256_hex


def _signable(header: MessageHeader, payload_digest: str) -> SignableMessage:
    return encode_defunct(primitive=keccak(header.encode() + bytes.fromhex(payload_digest)))


def sign_message(private_key: str | bytes, header: MessageHeader, payload: bytes) -> bytes:
    """65-byte (r, s, v) signature over the header and the payload's sha256."""
    return bytes(Account.sign_message(_signable(header, sha256_hex(payload)), private_key).signature)


def recover_signer_from_digest(header: MessageHeader, payload_digest: str, signature: bytes) -> str:
    """Checksummed address that signed (header, payload digest); a forged or altered message
    recovers to some other address (or raises ValueError for a malformed signature)."""
    return Account.recover_message(_signable(header, payload_digest), signature=signature)


def recover_signer(header: MessageHeader, payload: bytes, signature: bytes) -> str:
    return recover_signer_from_digest(header, sha256_hex(payload), signature)
