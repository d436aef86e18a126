"""An adversary on the P2P plane, against three on-chain `pm worker run --model` processes on a real
anvil and real hivemind peers. The adversary joins the DHT (it knows the public spec and model id)
but is not a member; it tries to download a stage's state, to drive a round, to inject forward and
backward messages signed by itself (also relayed by the real driver), to get inference for free,
to hand a fake stage key to a validator and to a newcomer, and to be routed to as a stage-1
replica. A member of stage 1 tries stage 0's and stage 2's state. Each attempt is refused with its
reason in the worker's log; then the real driver trains a round, every honest worker's claim
finalizes, and nobody honest is slashed."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from chain_testkit import anvil_account
from worker_kit import CREATOR, ChainSwarm, worker_account

from offchain.chain.client import ChainClient
from offchain.chain.models import spec_of_model
from offchain.chain.protocol import Protocol
from offchain.model.data import batch_for
from offchain.model.records import MessageHeader
from offchain.model.tokens import encode_tokens
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.authz import Access, Binder, ChainClock, Domain
from offchain.swarm.client import RemoteError, StageStream, call
from offchain.swarm.discovery import Announcement, announce, stage_key
from offchain.swarm.driver import Driver, DriverConfig
from offchain.swarm.identity import Identity
from offchain.swarm.keyshare import (
    EncryptionKeypair,
    HeldKey,
    KeyRequestRefused,
    StageKeyKeeper,
    StageKeyring,
    check_grant,
    make_key_request,
    request_stage_key,
)
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node
from offchain.swarm.server import StageServer
from offchain.swarm.wire import CONTROL_BYTES

pytestmark = pytest.mark.slow

MALLORY = anvil_account(7)  # funded, staked nowhere: a stranger with money
GATEWAY = anvil_account(8)
VALIDATOR = anvil_account(9)
NEWCOMER = anvil_account(6)


@pytest.fixture(scope="module")
def swarm(deployed, tmp_path_factory):
    """The model, its driver (the creator) and gateway on-chain, three workers serving, a validator of
    stage 1 and a newcomer that joined stage 1 (neither holds its key yet)."""
    url, deployments = deployed
    tmp = tmp_path_factory.mktemp("adversary")
    swarm = ChainSwarm.create(url, deployments, tmp)
    try:
        registry = swarm.protocol.registry
        swarm.protocol.client.transact(registry.functions.setGateway(swarm.model_id, GATEWAY.address, True))
        first = swarm.worker("stage0", 0)
        boot = first.maddr()
        workers = [first] + [swarm.worker(f"stage{s}", s, [boot]) for s in (1, 2)]
        peers = [w.maddr().rsplit("/p2p/", 1)[1] for w in workers]
        validator = ChainClient(url, VALIDATOR)
        ledger = validator.contract("WorkLedger", swarm.protocol.ledger.address)
        validator.transact(ledger.functions.stake(), value=ledger.functions.parameters().call()[8])
        validator.transact(ledger.functions.registerValidator(swarm.model_id, 1))
        yield swarm, boot, peers
    finally:
        swarm.close()


def _protocol(swarm: ChainSwarm, account) -> Protocol:
    return Protocol.load(ChainClient(swarm.rpc_url, account), swarm.deployments)


async def _refused(node, peer: str, method: str, request: dict) -> str:
    with pytest.raises(RemoteError) as caught:
        await call(node.p2p, peer, method, request, timeout=30)
    return str(caught.value)


async def _session(node, peer: str, opening: dict) -> dict:
    """Open an `infer` session (a completion's stream) and close it: the stage's answer to the
    opening (the round it serves), or RemoteError when it refuses the caller."""
    session = StageStream(peer, CONTROL_BYTES)
    try:
        await session.open(node.p2p, opening, timeout=30)
        return await session.opened(timeout=60)
    finally:
        await session.close()


async def _attacks(swarm: ChainSwarm, boot: str, peers: list[str]) -> dict[str, str]:
    """Every attempt of the adversary (and of a stage-1 member on other stages); name -> refusal."""
    protocol = _protocol(swarm, MALLORY)
    store = EmbeddedStore(swarm.tmp / "store")
    _, spec = spec_of_model(protocol, store, swarm.model_id)
    domain = Domain.of(protocol, swarm.model_id)
    chain_id, ledger = domain.deployment
    clock = ChainClock(protocol)
    node = await start_node(NetworkConfig(initial_peers=(boot,)))
    evil = await start_node(NetworkConfig(initial_peers=(boot,)))
    me = node.peer_id.to_base58()

    def bound(account) -> dict:
        binding = Binder(Identity.from_key(account.key), domain, me, clock).binding()
        return {"model": spec.digest(), "model_id": swarm.model_id, "binding": binding}

    def header(stage: int, direction: str) -> MessageHeader:
        """Addressed to the stage's worker (its address is public), so only the signer is at fault."""
        recipient = worker_account(stage).address.lower()
        return MessageHeader(swarm.model_id, stage, 1, 0, 0, direction, chain_id, ledger, recipient)

    mallory = Identity.from_key(MALLORY.key)
    tokens = encode_tokens(batch_for(spec, 1, 0, 0)[0], spec)
    where = {"round": 1, "step": 0, "micro_batch": 0, "targets": b""}
    forward0 = mallory.sign(header(0, "forward"), [b"", tokens])
    backward1 = mallory.sign(header(1, "backward"), [b"\0" * 64])
    base, driver, gateway = bound(MALLORY), bound(CREATOR), bound(GATEWAY)
    refusals: dict[str, str] = {}
    server = None
    try:
        refusals["state"] = await _refused(node, peers[1], "state", {**base, "kind": "committed"})
        for method in ("begin_round", "end_round", "abort_round"):
            refusals[method] = await _refused(node, peers[1], method, {**base, "round": 1})
        refusals["finish_round"] = await _refused(
            node, peers[1], "finish_round", {**base, "round": 1, "replicas": [peers[1]]}
        )
        refusals["sync"] = await _refused(node, peers[1], "sync", {**base, "peer": peers[1]})
        refusals["forward"] = await _refused(
            node, peers[0], "forward", {**base, **where, "message": forward0}
        )
        refusals["backward"] = await _refused(
            node, peers[1], "backward", {**base, **where, "message": backward1}
        )
        with pytest.raises(RemoteError) as caught:
            await _session(node, peers[1], base)
        refusals["infer"] = str(caught.value)

        # The model's real driver relays the adversary's messages: the caller passes, the signer does not.
        for peer in peers[:2]:
            await call(node.p2p, peer, "begin_round", {**driver, "round": 1}, timeout=30)
        try:
            request = {**driver, **where}
            refusals["relayed forward"] = await _refused(
                node, peers[0], "forward", {**request, "message": forward0}
            )
            refusals["relayed backward"] = await _refused(
                node, peers[1], "backward", {**request, "message": backward1}
            )
        finally:
            for peer in peers[:2]:
                await call(node.p2p, peer, "abort_round", {**driver, "round": 1}, timeout=30)

        # The model's gateway is served.
        served = await _session(node, peers[0], gateway)
        assert served["round"] >= 1

        # A fake key server on another DHT node: it grants its own stage-1 key under its own signature.
        fake = StageKeyring(swarm.tmp / "fake-keyring", swarm.model_id, 1)
        fake.add(HeldKey(StageKey.generate(swarm.model_id, 1), 0))
        access = Access.on_chain(protocol, swarm.model_id)
        server = StageServer(
            spec,
            1,
            mallory,
            model_id=swarm.model_id,
            session="evil",
            state_file=None,
            key_keeper=StageKeyKeeper(protocol, fake, MALLORY),
            authorizer=access.authorizer(),
            binder=access.binder(mallory, evil.peer_id.to_base58()),
        )
        await server.start(evil.p2p, None)
        record = Announcement(evil.peer_id.to_base58(), "evil", MALLORY.address, 1)
        await announce(evil, stage_key(spec.digest(), swarm.model_id, 1), record)
        # A driver routes around it: the announced peer is not a member's registered peer.
        router = Driver(
            DriverConfig(spec, Identity.from_key(CREATOR.key), model_id=swarm.model_id, access=access), node
        )
        assert [replica.peer_id for replica in await router.discover(1)] == [peers[1]]

        real = StageKeyring(
            swarm.state_dir(1) / f"stage-keys-model{swarm.model_id}-stage1", swarm.model_id, 1
        ).current.key

        # The newcomer joins stage 1 with this node's peer id: a member of stage 1 from now on.
        newcomer = _protocol(swarm, NEWCOMER)
        ledger_c = newcomer.ledger
        params = ledger_c.functions.parameters().call()
        newcomer.client.transact(ledger_c.functions.stake(), value=params[1] + params[7])
        newcomer.client.transact(
            ledger_c.functions.join(swarm.model_id, 1, node.peer_id.to_bytes(), b"\1" * 32)
        )

        for name, account in (("validator", VALIDATOR), ("newcomer", NEWCOMER)):
            asker = _protocol(swarm, account)
            keypair = EncryptionKeypair.load_or_create(swarm.tmp / f"{name}.x25519")
            request = make_key_request(asker, swarm.model_id, 1, account, keypair.public)
            reply = await call(
                node.p2p,
                evil.peer_id.to_base58(),
                "stage_key",
                {**request, "model": spec.digest()},
                timeout=30,
            )
            with pytest.raises(KeyRequestRefused, match="not a member of stage 1 on-chain") as caught:
                check_grant(asker, store, request, reply, keypair, None)
            refusals[f"fake key to the {name}"] = f"Unauthorized: {caught.value}"
            granted = await request_stage_key(
                node.p2p,
                node,
                asker,
                spec.digest(),
                swarm.model_id,
                1,
                account,
                keypair,
                timeout=30,
                store=store,
            )
            assert granted == real != fake.current.key, name

        # As a member of stage 1 this peer reads stage 1's state, and neither stage 0's nor stage 2's.
        # A server learns of the join from the chain within its refresh interval for unknown peers.
        deadline = time.monotonic() + 30
        while True:
            try:
                request = {**base, "kind": "committed"}
                state = await call(node.p2p, peers[1], "state", request, timeout=60, reply_limit=1 << 26)
                break
            except RemoteError as refused:
                if "not a member" not in str(refused) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert state["stage"] == 1
        for stage in (0, 2):
            refusals[f"member state of stage {stage}"] = await _refused(
                node, peers[stage], "state", {**base, "kind": "committed"}
            )
    finally:
        if server is not None:
            server.stop()
        await shutdown_node(evil)
        await shutdown_node(node)
    return refusals


def test_the_adversary_is_refused_and_honest_claims_finalize(swarm):
    chain, boot, peers = swarm
    refusals = asyncio.run(_attacks(chain, boot, peers))
    assert all(
        refusal.startswith("Unauthorized") or "Unauthorized" in refusal for refusal in refusals.values()
    ), refusals
    assert "not a member of this stage" in refusals["state"]
    for method in ("begin_round", "end_round", "abort_round", "finish_round", "sync", "forward", "backward"):
        assert "not a driver" in refusals[method], method
    assert "not a gateway" in refusals["infer"]
    assert "not a driver" in refusals["relayed forward"]
    assert "not a member of stage 2" in refusals["relayed backward"]
    assert "not a member of this stage" in refusals["member state of stage 0"]
    assert "not a member of this stage" in refusals["member state of stage 2"]
    logs = "".join(proc.text() for proc in chain.procs)
    for method in ("state", "begin_round", "finish_round", "sync", "infer"):
        assert re.search(rf"refused {method} from peer \S+: .*not a", logs), method
    assert re.search(r"refused forward from peer \S+: .*signed by .*not a driver", logs)
    assert re.search(r"refused backward from peer \S+: .*signed by .*not a member of stage 2", logs)

    chain.summary(chain.driver("driver", 1, [boot]))
    claims = {}
    deadline = time.monotonic() + 120
    while len(claims) < 3 and time.monotonic() < deadline:
        claims = {stage: events for stage in range(3) if (events := chain.claims(stage))}
        time.sleep(1)
    assert len(claims) == 3, "every honest worker claims its round"
    chain.pass_challenge_window()
    ledger = chain.protocol.ledger
    ids = [event["claimId"] for events in claims.values() for event in events]

    def finalized() -> set[int]:
        logs = ledger.events.ClaimFinalized().get_logs(from_block=chain.protocol.first_block())
        return {log["args"]["claimId"] for log in logs}

    while not set(ids) <= finalized() and time.monotonic() < deadline + 120:
        time.sleep(1)
    assert set(ids) <= finalized()
    slashed = {log["args"]["account"] for log in ledger.events.Slashed().get_logs(from_block=0)}
    assert not slashed & {worker_account(stage).address for stage in range(3)}
