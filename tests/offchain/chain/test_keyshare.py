"""Stage-key handover over real hivemind P2P, gated by real on-chain membership on anvil: a member of
the stage and a validator of that stage receive the key; anyone else (an outsider, a member or a
validator of another stage, a forged or stale request) is refused. A grant is believed only when an
on-chain member of the stage signed it and the key opens the stage's finalized checkpoint; a
member that leaves makes the next checkpoint's key a new one, which it is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets

import pytest
from chain_testkit import REPO, anvil_account, join_stage

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.model.spec import load_spec
from offchain.storage.crypto import StageKey, encrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.authz import Access
from offchain.swarm.discovery import Announcement, announce, stage_key
from offchain.swarm.identity import Identity
from offchain.swarm.keyshare import (
    EncryptionKeypair,
    FinalizedCheckpoint,
    HeldKey,
    KeyRequestRefused,
    StageKeyKeeper,
    StageKeyring,
    StageKeyUnavailable,
    check_grant,
    make_key_request,
    request_stage_key,
    rotate_if_departed,
)
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, visible_maddrs
from offchain.swarm.server import StageServer

SPEC = REPO / "specs" / "tiny.json"
MEMBER, NEWCOMER, OTHER_STAGE, VALIDATOR, OUTSIDER, OTHER_VALIDATOR = (anvil_account(i) for i in range(2, 8))


@pytest.fixture
def setup(chain, tmp_path):
    url, deployments = chain
    creator = ChainClient(url, anvil_account(1))
    protocol = Protocol.load(creator, deployments)
    created = create_model(
        protocol,
        EmbeddedStore(tmp_path / "store"),
        SPEC,
        shares_per_work_unit=10**18,
        revenue_asset="eth",
        operator=None,
    )
    model_id = created.model.model_id
    for account, stage in ((MEMBER, 1), (NEWCOMER, 1), (OTHER_STAGE, 2)):
        join_stage(protocol, ChainClient(url, account), model_id, stage)
    for account, stage in ((VALIDATOR, 1), (OTHER_VALIDATOR, 2)):
        client = ChainClient(url, account)
        ledger = client.contract("WorkLedger", protocol.ledger.address)
        client.transact(ledger.functions.stake(), value=ledger.functions.parameters().call()[8])
        client.transact(ledger.functions.registerValidator(model_id, stage))
    return protocol, model_id


def _keeper(protocol: Protocol, model_id: int, key: StageKey, tmp_path, account=MEMBER) -> StageKeyKeeper:
    keyring = StageKeyring(tmp_path / f"keyring-{account.address}", model_id, 1)
    keyring.add(HeldKey(key, 0))
    return StageKeyKeeper(protocol, keyring, account)


async def _handover(protocol: Protocol, model_id: int, key: StageKey, tmp_path) -> dict[str, object]:
    """One member serves stage 1 with `key`; every account asks it for the key over P2P."""
    spec = load_spec(SPEC)
    server_node = await start_node(NetworkConfig())
    peers = await visible_maddrs(server_node)
    identity = Identity.from_key(MEMBER.key)
    access = Access.on_chain(protocol, model_id)
    server = StageServer(
        spec,
        1,
        identity,
        model_id=model_id,
        session="s",
        state_file=None,
        key_keeper=_keeper(protocol, model_id, key, tmp_path),
        authorizer=access.authorizer(),
        binder=access.binder(identity, server_node.peer_id.to_base58()),
    )
    results: dict[str, object] = {}
    try:
        await server.start(server_node.p2p, None)
        record = Announcement(server_node.peer_id.to_base58(), "s", MEMBER.address, 0)
        await announce(server_node, stage_key(spec.digest(), model_id, 1), record)
        askers = {"newcomer": NEWCOMER, "validator": VALIDATOR, "other_stage": OTHER_STAGE}
        askers |= {"other_validator": OTHER_VALIDATOR, "outsider": OUTSIDER}
        for name, account in askers.items():
            # Each asker is its own peer, as in a real swarm: a server limits key requests per peer,
            # and a refused asker retries until its timeout.
            asker_node = await start_node(NetworkConfig(initial_peers=peers))
            keypair = EncryptionKeypair.load_or_create(tmp_path / f"{name}.x25519")
            try:
                results[name] = await request_stage_key(
                    asker_node.p2p,
                    asker_node,
                    protocol,
                    spec.digest(),
                    model_id,
                    1,
                    account,
                    keypair,
                    timeout=2,
                )
            except StageKeyUnavailable as error:
                results[name] = error
            finally:
                await shutdown_node(asker_node)
    finally:
        server.stop()
        await shutdown_node(server_node)
    return results


def test_members_and_validators_of_the_stage_receive_the_key_others_are_refused(setup, tmp_path):
    protocol, model_id = setup
    key = StageKey.generate(model_id, 1)
    results = asyncio.run(_handover(protocol, model_id, key, tmp_path))
    assert results["newcomer"] == key
    assert results["validator"] == key
    for name in ("other_stage", "other_validator", "outsider"):
        assert isinstance(results[name], StageKeyUnavailable), name
        assert "neither a member nor a validator of stage 1" in str(results[name])


def test_forged_stale_and_misaddressed_requests_are_refused(setup, tmp_path):
    protocol, model_id = setup
    keeper = _keeper(protocol, model_id, StageKey.generate(model_id, 1), tmp_path)
    recipient = secrets.token_bytes(32)

    forged = make_key_request(protocol, model_id, 1, OUTSIDER, recipient) | {"requester": MEMBER.address}
    with pytest.raises(KeyRequestRefused, match="signed by"):
        keeper.grant(forged)

    tampered = make_key_request(protocol, model_id, 1, MEMBER, recipient)
    tampered["recipient"] = secrets.token_bytes(32)  # a relay swapping in its own key breaks the signature
    with pytest.raises(KeyRequestRefused, match="signed by"):
        keeper.grant(tampered)

    stale = make_key_request(protocol, model_id, 1, MEMBER, recipient, now=1)
    with pytest.raises(KeyRequestRefused, match="expired"):
        keeper.grant(stale)

    with pytest.raises(KeyRequestRefused, match="keeps model"):
        keeper.grant(make_key_request(protocol, model_id, 2, OTHER_STAGE, recipient))

    with pytest.raises(KeyRequestRefused, match="holds no key"):
        keeper.grant(make_key_request(protocol, model_id, 1, MEMBER, recipient, key_id=b"\0" * 8))

    assert "sealed" in keeper.grant(make_key_request(protocol, model_id, 1, MEMBER, recipient))


def test_a_grant_counts_only_from_a_member_and_only_if_it_opens_the_checkpoint(setup, tmp_path):
    protocol, model_id = setup
    keypair = EncryptionKeypair.load_or_create(tmp_path / "newcomer.x25519")
    real = StageKey.generate(model_id, 1)
    request = make_key_request(protocol, model_id, 1, NEWCOMER, keypair.public)
    store = EmbeddedStore(tmp_path / "checkpoints")
    state = b"stage 1 weights"
    cid = store.put(bytes(encrypt_checkpoint(real, state)))
    finalized = FinalizedCheckpoint(cid, hashlib.sha256(state).digest(), real.key_id)

    honest = _keeper(protocol, model_id, real, tmp_path).grant(request)
    assert check_grant(protocol, store, request, honest, keypair, finalized).key == real

    fake = StageKey.generate(model_id, 1)  # the outsider's own key, granted under its own signature
    forged = _keeper(protocol, model_id, fake, tmp_path, account=OUTSIDER).grant(request)
    with pytest.raises(KeyRequestRefused, match="not a member of stage 1 on-chain"):
        check_grant(protocol, store, request, forged, keypair, None)
    relabelled = {**forged, "member": MEMBER.address}
    with pytest.raises(KeyRequestRefused, match="grant signed by"):
        check_grant(protocol, store, request, relabelled, keypair, None)

    altered = FinalizedCheckpoint(cid, hashlib.sha256(b"other weights").digest(), real.key_id)
    with pytest.raises(KeyRequestRefused, match="not the digest on-chain"):
        check_grant(protocol, store, request, honest, keypair, altered)


def test_a_leaver_does_not_receive_the_key_created_after_it_left(setup, tmp_path):
    protocol, model_id = setup
    first = StageKey.generate(model_id, 1)
    keeper = _keeper(protocol, model_id, first, tmp_path)
    keyring = keeper.keyring
    assert rotate_if_departed(protocol, keyring) == first  # nobody left: no rotation

    leaver = ChainClient(protocol.client.rpc_url, NEWCOMER)
    leaver.transact(leaver.contract("WorkLedger", protocol.ledger.address).functions.leave(model_id))
    rotated = rotate_if_departed(protocol, keyring)
    assert rotated != first and keyring.current.key == rotated
    assert keyring.get(first.key_id).key == first  # old checkpoints stay readable to members
    assert rotate_if_departed(protocol, keyring) == rotated  # one rotation per departure

    recipient = secrets.token_bytes(32)
    with pytest.raises(KeyRequestRefused, match="neither a member nor a validator"):
        keeper.grant(make_key_request(protocol, model_id, 1, NEWCOMER, recipient))
    assert "sealed" in keeper.grant(make_key_request(protocol, model_id, 1, VALIDATOR, recipient))


def test_encryption_keypair_persists_privately(tmp_path):
    path = tmp_path / "keys" / "x25519"
    first = EncryptionKeypair.load_or_create(path)
    assert EncryptionKeypair.load_or_create(path) == first
    assert os.stat(path).st_mode & 0o777 == 0o600
    path.write_text("not hex")
    with pytest.raises(Exception, match="32-byte hex"):
        EncryptionKeypair.load_or_create(path)
