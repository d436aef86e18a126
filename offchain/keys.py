"""Where a participant's private key comes from: a key file or an environment variable.

A key never appears in a log line, an exception message or a repr: only its address does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.errors import UserError

KEY_ENV = "PM_PRIVATE_KEY"
PASSWORD_ENV = "PM_KEY_PASSWORD"


def _from_hex(text: str, origin: str) -> LocalAccount:
    try:
        return Account.from_key(text.strip())
    except (ValueError, TypeError):
        raise UserError(f"{origin} does not hold a valid private key (64 hex digits)") from None


def load_account(key_file: Path | None = None, key_env: str = KEY_ENV) -> LocalAccount:
    """Load the signing account.

    `key_file` may hold a raw hex key or an encrypted Ethereum keystore (JSON, the password in
    $PM_KEY_PASSWORD). Without a file, the key comes from the environment variable `key_env`.
    """
    if key_file is not None:
        if not key_file.is_file():
            raise UserError(f"key file {key_file} does not exist")
        text = key_file.read_text()
        if text.lstrip().startswith("{"):
            return _from_keystore(text, key_file)
        return _from_hex(text, f"key file {key_file}")
    value = os.environ.get(key_env)
    if not value:
        raise UserError(f"no key: pass --key-file or set {key_env}")
    return _from_hex(value, f"${key_env}")


def _from_keystore(text: str, key_file: Path) -> LocalAccount:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        raise UserError(f"key file {key_file} is encrypted: set {PASSWORD_ENV}")
    try:
        keystore = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"key file {key_file} is not valid keystore JSON") from None
    try:
        key = Account.decrypt(keystore, password)
    except ValueError:
        raise UserError(f"key file {key_file}: wrong password") from None
    return Account.from_key(key)


def redact_url(url: str) -> str:
    """`url` fit for a log line or an error: scheme, host and port only. RPC providers put API keys
    in the path (/v3/<key>), the query or the user info, so all of those become `***`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    secret = parts.username or parts.password or parts.path.strip("/") or parts.query
    return f"{parts.scheme}://{host}{port}{'/***' if secret else ''}"
