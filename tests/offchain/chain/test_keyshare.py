"""Stage-key handover over real hivemind P2P, gated by real on-chain membership on anvil: a member
of the stage and a validator receive the key, anyone else (an outsider, a member of another stage,
a forged or stale request) is refused."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from chain_testkit import REPO, anvil_account, join_stage

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.model.spec import load_spec
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.discovery import Announcement, announce, stage_key
from offchain.swarm.identity import Identity
from offchain.swarm.keyshare import (
    EncryptionKeypair,
    KeyRequestRefused,
    StageKeyKeeper,
    StageKeyUnavailable,
    make_key_request,
    request_stage_key,
)
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, visible_maddrs
from offchain.swarm.server import StageServer

ETHER = 10**18
SPEC = REPO / "specs" / "tiny.json"
MEMBER, NEWCOMER, OTHER_STAGE, VALIDATOR, OUTSIDER = (anvil_account(i) for i in (2, 3, 4, 5, 6))


@pytest.fixture
def setup(chain, tmp_path):
    url, deployments = chain
    creator = ChainClient(url, anvil_account(1))
    protocol = Protocol.load(creator, deployments)
    created = create_model(
        protocol,
        EmbeddedStore(tmp_path / "store"),
        SPEC,
        shares_per_work_unit=ETHER,
        revenue_asset="eth",
        operator=None,
    )
    model_id = created.model.model_id
    for account, stage in ((MEMBER, 1), (NEWCOMER, 1), (OTHER_STAGE, 2)):
        join_stage(protocol, ChainClient(url, account), model_id, stage)
    validator = ChainClient(url, VALIDATOR)
    ledger = validator.contract("WorkLedger", protocol.ledger.address)
    validator.transact(ledger.functions.stake(), value=ledger.functions.parameters().call()[8])
    validator.transact(ledger.functions.registerValidator())
    return protocol, model_id


async def _handover(protocol: Protocol, model_id: int, key: StageKey, tmp_path) -> dict[str, object]:
    """One member serves stage 1 with `key`; every account asks it for the key over P2P."""
    spec = load_spec(SPEC)
    keeper = StageKeyKeeper(protocol, model_id, 1, key)
    server_node = await start_node(NetworkConfig())
    peers = await visible_maddrs(server_node)
    asker_node = await start_node(NetworkConfig(initial_peers=peers))
    server = StageServer(
        spec,
        1,
        Identity.from_key(MEMBER.key),
        model_id=model_id,
        session="s",
        state_file=None,
        key_keeper=keeper,
    )
    results: dict[str, object] = {}
    try:
        await server.start(server_node.p2p, None)
        record = Announcement(server_node.peer_id.to_base58(), "s", MEMBER.address, 0)
        await announce(server_node, stage_key(spec.digest(), model_id, 1), record)
        for name, account in (("newcomer", NEWCOMER), ("validator", VALIDATOR), ("other_stage", OTHER_STAGE)):
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
                    timeout=3,
                )
            except StageKeyUnavailable as error:
                results[name] = error
    finally:
        server.stop()
        await shutdown_node(asker_node)
        await shutdown_node(server_node)
    return results


def test_members_and_validators_receive_the_key_others_are_refused(setup, tmp_path):
    protocol, model_id = setup
    key = StageKey.generate(model_id, 1)
    results = asyncio.run(_handover(protocol, model_id, key, tmp_path))
    assert results["newcomer"] == key
    assert results["validator"] == key
    refused = results["other_stage"]
    assert isinstance(refused, StageKeyUnavailable)
    assert "neither a member of stage 1 nor a validator" in str(refused)


def test_forged_stale_and_misaddressed_requests_are_refused(setup):
    protocol, model_id = setup
    keeper = StageKeyKeeper(protocol, model_id, 1, StageKey.generate(model_id, 1))
    recipient = secrets.token_bytes(32)

    with pytest.raises(KeyRequestRefused, match="nor a validator"):
        keeper.grant(make_key_request(protocol, model_id, 1, OUTSIDER, recipient))

    forged = make_key_request(protocol, model_id, 1, OUTSIDER, recipient) | {"requester": MEMBER.address}
    with pytest.raises(KeyRequestRefused, match="signed by"):
        keeper.grant(forged)

    tampered = make_key_request(protocol, model_id, 1, MEMBER, recipient)
    tampered["recipient"] = secrets.token_bytes(32)  # a relay swapping in its own key breaks the signature
    with pytest.raises(KeyRequestRefused, match="signed by"):
        keeper.grant(tampered)

    stale = make_key_request(protocol, model_id, 1, MEMBER, recipient) | {"expires": 1}
    with pytest.raises(KeyRequestRefused, match="expired"):
        keeper.grant(stale)

    with pytest.raises(KeyRequestRefused, match="keeps model"):
        keeper.grant(make_key_request(protocol, model_id, 2, OTHER_STAGE, recipient))

    assert "sealed" in keeper.grant(make_key_request(protocol, model_id, 1, MEMBER, recipient))


def test_encryption_keypair_persists_privately(tmp_path):
    path = tmp_path / "keys" / "x25519"
    first = EncryptionKeypair.load_or_create(path)
    assert EncryptionKeypair.load_or_create(path) == first
    assert os.stat(path).st_mode & 0o777 == 0o600
    path.write_text("not hex")
    with pytest.raises(Exception, match="32-byte hex"):
        EncryptionKeypair.load_or_create(path)
