"""Quote tickets: what a customer pays for and what it presents to be served.

A request id is public once paid (it is in the payment's calldata and in the `InferencePaid`
event), so it cannot be the credential: anyone watching the chain could redeem a payment made by
someone else. The gateway therefore hands out a random 32-byte *ticket* with each quote and binds
the request id to it:

    requestId = keccak256(gateway secret || uint256(model id) || ticket)

The customer pays `requestId` and presents the `ticket`; only the ticket's holder can redeem the
payment, and the id never reveals the ticket. The gateway secret (kept in the state folder) makes
the ids of two gateways disjoint, so one payment cannot be redeemed at two gateways that keep
separate served-request records, and a ticket issued for one model pays no other model.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from eth_utils import keccak

from offchain.durable import write_atomic
from offchain.errors import UserError

TICKET_BYTES = 32
SECRET_FILE = "gateway.secret"


def new_ticket() -> bytes:
    return secrets.token_bytes(TICKET_BYTES)


def request_id(secret: bytes, model_id: int, ticket: bytes) -> bytes:
    return keccak(secret + model_id.to_bytes(32, "big") + ticket)


def parse_hex32(text: str, what: str) -> bytes:
    """0x + 64 hex digits -> 32 bytes, or a UserError naming the field."""
    body = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        value = bytes.fromhex(body)
    except ValueError:
        value = b""
    if len(value) != TICKET_BYTES:
        raise UserError(f"{what} must be 0x followed by 64 hex digits")
    return value


def load_or_create_secret(state_dir: Path) -> bytes:
    """The gateway's secret, created once (mode 0600) so request ids survive restarts."""
    path = state_dir / SECRET_FILE
    if path.exists():
        secret = path.read_bytes()
        if len(secret) != TICKET_BYTES:
            raise UserError(f"{path} is not a gateway secret ({len(secret)} bytes, expected {TICKET_BYTES})")
        return secret
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(TICKET_BYTES)
    write_atomic(path, secret, mode=0o600)
    return secret
