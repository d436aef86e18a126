"""Keys come from a key file (hex or encrypted keystore) or the environment, and never leak."""

import json

import pytest
from eth_account import Account

from offchain.errors import UserError
from offchain.keys import load_account

KEY = "0x" + "11" * 32


def test_hex_key_file_and_env_give_the_same_account(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("PM_PRIVATE_KEY", KEY)
    assert load_account(key_file).address == load_account().address == Account.from_key(KEY).address


def test_keystore_needs_the_right_password(tmp_path, monkeypatch):
    key_file = tmp_path / "keystore.json"
    key_file.write_text(json.dumps(Account.encrypt(KEY, "correct horse", iterations=2)))
    monkeypatch.setenv("PM_KEY_PASSWORD", "correct horse")
    assert load_account(key_file).address == Account.from_key(KEY).address
    monkeypatch.setenv("PM_KEY_PASSWORD", "wrong")
    with pytest.raises(UserError, match="wrong password"):
        load_account(key_file)
    monkeypatch.delenv("PM_KEY_PASSWORD")
    with pytest.raises(UserError, match="is encrypted: set PM_KEY_PASSWORD"):
        load_account(key_file)


@pytest.mark.parametrize("content", ["not a key", "0x1234", ""])
def test_malformed_key_is_a_clear_error_that_does_not_echo_the_content(tmp_path, content):
    key_file = tmp_path / "key"
    key_file.write_text(content)
    with pytest.raises(UserError) as caught:
        load_account(key_file)
    assert "does not hold a valid private key" in str(caught.value)
    if content:
        assert content not in str(caught.value)


def test_missing_key_names_both_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("PM_PRIVATE_KEY", raising=False)
    with pytest.raises(UserError, match="pass --key-file or set PM_PRIVATE_KEY"):
        load_account()
    with pytest.raises(UserError, match="does not exist"):
        load_account(tmp_path / "nope")
