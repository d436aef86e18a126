"""The P2P plane's formats and hygiene, without a network: the signed message format is pinned by a
golden vector; peer bindings are refused for another peer, deployment or time; secrets are created
0600 atomically and never appear in a repr; RPC URLs lose their credentials; the rate limiter limits."""

from __future__ import annotations

import os
import stat
import time

import pytest
from eth_utils import keccak

from offchain.durable import write_atomic
from offchain.keys import redact_url
from offchain.model.records import NO_LEDGER, MessageHeader, message_payload
from offchain.model.spec import load_spec
from offchain.proofs.signing import recover_signer, sign_message
from offchain.storage.crypto import StageKey
from offchain.swarm.authz import (
    AllowList,
    Authorizer,
    Domain,
    RateLimiter,
    Unauthorized,
    make_binding,
    verify_binding,
)
from offchain.swarm.identity import Identity, p2p_identity
from offchain.swarm.keyshare import EncryptionKeypair, HeldKey, StageKeyring
from offchain.swarm.local import ROOT
from offchain.swarm.server import RoundState, StateFile

KEY = keccak(text="pm-test-driver")  # a throwaway identity derived from a public string
DRIVER = Identity.from_key(KEY)
OUTSIDER = Identity.from_key(keccak(text="pm-test-outsider"))
LEDGER = "0x" + "ab" * 20
RECIPIENT = "0x" + "cd" * 20
DOMAIN = Domain(31337, LEDGER, 7)
PEER = "QmWEuJRem33mVzkPnvHQF9U534pruGG6B7HiBxRQUboPUQ"


def test_signed_message_format_is_pinned():
    header = MessageHeader(7, 1, 2, 3, 0, "forward", 31337, LEDGER, RECIPIENT)
    assert header.encode().hex() == (
        "504d4d5347330000000000007a69abababababababababababababababababababab"
        "000000000000000700010000000000000002000000030000000000cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
    )
    signature = sign_message(KEY, header, message_payload(b"act", b"tok"))
    assert signature.hex() == (
        "02a1db74a2b844f44427866b20fc2792f03f2a06b9b5bdb8e8af008594f04504366c134ff227b9a38c5f451035bef9671d42"
        "3278facd01fd36917adec08c8cce1c"
    )
    assert MessageHeader.decode(header.encode()) == header
    payload = message_payload(b"act", b"tok")
    assert recover_signer(header, payload, signature) == DRIVER.address
    for other in (
        MessageHeader(7, 1, 2, 3, 0, "forward", 1, LEDGER, RECIPIENT),
        MessageHeader(7, 1, 2, 3, 0, "forward", recipient=RECIPIENT),
        MessageHeader(7, 1, 2, 3, 0, "forward", 31337, LEDGER, OUTSIDER.address.lower()),
    ):  # another chain, deployment or receiving worker
        assert recover_signer(other, payload, signature) != DRIVER.address
    for bad in ({"ledger": LEDGER.upper()}, {"recipient": RECIPIENT.upper()}, {"recipient": "0x12"}):
        with pytest.raises(ValueError, match="lowercase"):
            MessageHeader(7, 1, 2, 3, 0, "forward", 1, **bad)


def test_peer_bindings_bind_one_address_to_one_peer_deployment_and_time():
    now = 1_000_000
    binding = make_binding(DRIVER, DOMAIN, PEER, now + 600)
    assert verify_binding(binding, DOMAIN, PEER, now) == DRIVER.address
    refused = {
        "another peer": (binding, DOMAIN, "QmOther", now),
        "another chain": (binding, Domain(1, LEDGER, 7), PEER, now),
        "another ledger": (binding, Domain(31337, NO_LEDGER, 7), PEER, now),
        "another model": (binding, Domain(31337, LEDGER, 8), PEER, now),
        "expired": (binding, DOMAIN, PEER, now + 601),
        "claims another address": ({**binding, "address": OUTSIDER.address}, DOMAIN, PEER, now),
        "malformed": ({"address": 1}, DOMAIN, PEER, now),
    }
    for args in refused.values():
        with pytest.raises(Unauthorized):
            verify_binding(*args)


def test_off_chain_default_deny_and_allow_list():
    closed = Authorizer(AllowList([]), Domain.offchain(0))
    binding = make_binding(DRIVER, Domain.offchain(0), PEER, int(time.time()) + 600)
    for method in ("state", "begin_round", "forward", "infer", "sync"):
        with pytest.raises(Unauthorized, match="not a"):
            closed.admit(method, PEER, binding, 1)
    assert closed.admit("info", PEER, None, 1).account is None
    listed = Authorizer(AllowList([DRIVER.address]), Domain.offchain(0))
    assert listed.admit("begin_round", PEER, binding, 1).account == DRIVER.address
    with pytest.raises(Unauthorized, match="unknown account"):
        listed.admit("state", PEER, None, 1)
    header = MessageHeader(0, 1, 0, 0, 0, "forward")
    listed.check_message(header, DRIVER.address)
    with pytest.raises(Unauthorized, match="not a member of stage 0"):
        listed.check_message(header, OUTSIDER.address)
    with pytest.raises(Unauthorized, match="message for chain 5"):
        listed.check_message(MessageHeader(0, 1, 0, 0, 0, "forward", 5, NO_LEDGER), DRIVER.address)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secrets_are_private_from_their_creation_and_never_in_a_repr(tmp_path):
    os.umask(0o022)
    write_atomic(tmp_path / "secret", b"x", mode=0o600)
    assert _mode(tmp_path / "secret") == 0o600
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]

    keypair = EncryptionKeypair.load_or_create(tmp_path / "x25519")
    assert _mode(tmp_path / "x25519") == 0o600
    assert keypair.private.hex() not in repr(keypair)

    identity_file = p2p_identity(tmp_path / "p2p.key")
    assert _mode(identity_file) == 0o600
    assert p2p_identity(identity_file).read_bytes() == identity_file.read_bytes()  # kept across restarts

    key = StageKey.generate(1, 2)
    keyring = StageKeyring(tmp_path / "keyring", 1, 2)
    keyring.add(HeldKey(key, 5))
    assert _mode(tmp_path / "keyring") == 0o600
    assert StageKeyring(tmp_path / "keyring", 1, 2).current == HeldKey(key, 5)
    assert key.secret.hex() not in repr(keyring) and key.secret.hex() not in repr(keyring.current)

    assert KEY.hex() not in repr(DRIVER) and DRIVER.address in repr(DRIVER)

    spec = load_spec(ROOT / "specs" / "tiny.json")
    state_file = StateFile(tmp_path / "state", spec, 0, 1)
    state_file.save(RoundState(3, b"weights"))
    assert _mode(state_file.path) == 0o600 and state_file.load() == RoundState(3, b"weights")


def test_rpc_urls_lose_their_credentials():
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url("https://mainnet.example.io/v3/0123456789abcdef") == "https://mainnet.example.io/***"
    assert redact_url("https://user:secret@node.example:8545") == "https://node.example:8545/***"
    assert redact_url("https://node.example/?apikey=secret") == "https://node.example/***"
    assert redact_url("not a url") == "***"


def test_rate_limiter_allows_a_burst_then_the_rate():
    limiter = RateLimiter(rate=0.5, burst=3)
    assert [limiter.allow("peer") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("another peer")
