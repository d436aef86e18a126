"""A 3-stage pipeline of real `pm worker run` processes on loopback, driven by `pm driver run`,
trains bitwise like the single-process reference; bad requests are refused and serving goes on."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from eth_account import Account

from offchain.model.data import batch_for, micro_batch
from offchain.model.records import NO_LEDGER, MessageHeader
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import encode_tokens
from offchain.swarm.authz import Domain, make_binding
from offchain.swarm.client import RemoteError, StageStream, call
from offchain.swarm.identity import Identity
from offchain.swarm.local import LOCAL_KEY
from offchain.swarm.node import NetworkConfig, start_node
from offchain.swarm.wire import CONTROL_BYTES
from tests.offchain.swarm.conftest import Swarm, write_spec

pytestmark = pytest.mark.slow

ROUNDS = 2


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    swarm = Swarm(tmp, write_spec(tmp))
    try:
        first = swarm.worker("stage0", 0)
        bootstrap = first.maddr()
        workers = [first] + [swarm.worker(f"stage{s}", s, [bootstrap]) for s in (1, 2)]
        addresses = [worker.maddr() for worker in workers]
        yield swarm, bootstrap, addresses
    finally:
        swarm.close()


def _peer_id(maddr: str) -> str:
    return maddr.rsplit("/p2p/", 1)[1]


def _bound(me: Identity, node) -> dict:
    """A peer binding of `me` to this node's peer id, off-chain (model 0)."""
    return make_binding(me, Domain.offchain(0), node.peer_id.to_base58(), int(time.time()) + 600)


async def _bad_requests(spec_path, bootstrap: str, stage1: str) -> list[str]:
    """The local swarm's own (allowed) address sends malformed requests: each refused, serving goes on.
    A well-formed message addressed to another worker is refused (it never reaches the trace), and
    so is a request naming a recipient outside the next stage for the message the server would send."""
    spec = load_spec(spec_path)
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    me = Identity.from_key(LOCAL_KEY)
    base = {"model": spec.digest(), "model_id": 0, "binding": _bound(me, node)}
    refusals = []

    async def refused(method: str, request: dict) -> None:
        with pytest.raises(RemoteError) as caught:
            await call(node.p2p, stage1, method, request, timeout=30)
        refusals.append(str(caught.value))

    try:
        await refused("info", {**base, "model": "ab" * 32})
        await refused("info", {**base, "model_id": 7})
        await call(node.p2p, stage1, "begin_round", {**base, "round": 0}, timeout=30)
        ids, _, source = micro_batch(spec, None, 0, 0, 0)
        tokens = encode_tokens(ids, spec)
        own, stranger = me.address.lower(), Account.create().address.lower()
        header = MessageHeader(0, 1, 0, 0, 0, "forward", recipient=own)
        where = {"round": 0, "step": 0, "micro_batch": 0, "targets": b"", "recipient": own}
        where["source"] = [list(row) for row in source]
        wrong_shape = me.sign(header, [b"\0" * 12, tokens])
        await refused("forward", {**base, **where, "message": wrong_shape})
        forged = {**me.sign(header, [b"\0" * 12, tokens]), "sender": Account.create().address}
        await refused("forward", {**base, **where, "message": forged})
        other_stage = me.sign(MessageHeader(0, 2, 0, 0, 0, "forward", recipient=own), [b"", tokens])
        await refused("forward", {**base, **where, "message": other_stage})
        other_chain = me.sign(MessageHeader(0, 1, 0, 0, 0, "forward", 1, NO_LEDGER, own), [b"", tokens])
        await refused("forward", {**base, **where, "message": other_chain})
        await refused("begin_round", {**base, "round": 0, "padding": b"\0" * (CONTROL_BYTES + 1)})
        other_worker = me.sign(MessageHeader(0, 1, 0, 0, 0, "forward", recipient=stranger), [b"", tokens])
        await refused("forward", {**base, **where, "message": other_worker})
        await refused("forward", {**base, **where, "message": wrong_shape, "recipient": stranger})
        not_the_data = me.sign(header, [b"\0" * 12, encode_tokens(ids.roll(1, dims=1), spec)])
        await refused("forward", {**base, **where, "message": not_the_data})
        await call(node.p2p, stage1, "abort_round", {**base, "round": 0}, timeout=30)
        info = await call(node.p2p, stage1, "info", base, timeout=30)
        assert info["stage"] == 1 and info["round"] == 0 and info["in_round"] is None
    finally:
        await node.shutdown()
    return refusals


async def _outsider(spec_path, bootstrap: str, stage0: str, stage1: str) -> list[str]:
    """A DHT peer whose address is not on the allow-list: every RPC but `info` refused, whatever
    binding or signature it brings."""
    spec = load_spec(spec_path)
    node = await start_node(NetworkConfig(initial_peers=(bootstrap,)), client_mode=True)
    mallory = Identity.from_key(Account.create().key)
    base = {"model": spec.digest(), "model_id": 0, "binding": _bound(mallory, node)}
    tokens = encode_tokens(batch_for(spec, 0, 0, 0)[0], spec)
    where = {"round": 0, "step": 0, "micro_batch": 0, "targets": b""}
    stolen = {**base, "binding": _bound(Identity.from_key(LOCAL_KEY), node) | {"peer": "12D3KooWelsewhere"}}
    attempts = [
        (stage1, "state", {**base, "kind": "committed"}),
        (stage1, "state", {**stolen, "kind": "committed"}),
        (stage1, "begin_round", {**base, "round": 0}),
        (stage1, "end_round", {**base, "round": 0}),
        (stage1, "finish_round", {**base, "round": 0, "replicas": []}),
        (stage1, "sync", {**base, "peer": stage0}),
        (
            stage0,
            "forward",
            {
                **base,
                **where,
                "message": mallory.sign(MessageHeader(0, 0, 0, 0, 0, "forward"), [b"", tokens]),
            },
        ),
        (
            stage0,
            "backward",
            {**base, **where, "message": mallory.sign(MessageHeader(0, 0, 0, 0, 0, "backward"), [b"g"])},
        ),
    ]
    refusals = []
    try:
        for peer, method, request in attempts:
            with pytest.raises(RemoteError) as caught:
                await call(node.p2p, peer, method, request, timeout=30)
            refusals.append(f"{method}: {caught.value}")
        session = StageStream(stage1, CONTROL_BYTES)  # infer is a stream: refused at its opening
        try:
            await session.open(node.p2p, base, timeout=30)
            with pytest.raises(RemoteError) as caught:
                await session.opened(timeout=30)
            refusals.append(f"infer: {caught.value}")
        finally:
            await session.close()
        assert (await call(node.p2p, stage1, "info", base, timeout=30))["stage"] == 1
    finally:
        await node.shutdown()
    return refusals


def test_bad_requests_are_refused_and_the_server_keeps_serving(pipeline):
    swarm, bootstrap, addresses = pipeline
    refusals = asyncio.run(_bad_requests(swarm.spec, bootstrap, _peer_id(addresses[1])))
    assert "the request is for model 0 spec abababab" in refusals[0]
    assert "the request is for model 7" in refusals[1]
    assert "activation" in refusals[2] or "bytes" in refusals[2]
    assert "bad signature" in refusals[3]
    assert "not a forward message to stage 1" in refusals[4]
    assert "message for chain 1" in refusals[5]
    assert "larger than" in refusals[6]
    assert re.search(r"message addressed to worker 0x[0-9a-f]{40}, this worker is 0x", refusals[7])
    assert re.search(r"recipient 0x[0-9a-f]{40} is not a member of stage 2", refusals[8])
    # a driver's lie about the data is refused before the stage computes anything (the worker
    # checks it against the data set it opened from its store)
    assert (
        "NotTheData: round 0 step 0 micro-batch 0: its token ids are not the data set's rows" in refusals[9]
    )


def test_an_outsider_is_refused_every_rpc_but_info(pipeline):
    swarm, bootstrap, addresses = pipeline
    stage0, stage1 = _peer_id(addresses[0]), _peer_id(addresses[1])
    refusals = asyncio.run(_outsider(swarm.spec, bootstrap, stage0, stage1))
    assert all("Unauthorized" in refusal for refusal in refusals), refusals
    assert "binding is for peer" in refusals[1]
    logs = swarm.procs[0].text() + swarm.procs[1].text()
    for method in (
        "state",
        "begin_round",
        "end_round",
        "finish_round",
        "sync",
        "forward",
        "backward",
        "infer",
    ):
        assert re.search(rf"refused {method} from peer \S+: .*not a (driver|gateway|member)", logs), method


def test_three_stage_swarm_trains_bitwise_like_one_process(pipeline):
    swarm, bootstrap, _ = pipeline
    summary = swarm.summary(swarm.driver("driver", ROUNDS, [bootstrap]))
    reference = train_single_process(load_spec(swarm.spec), ROUNDS)
    losses = [loss for round_ in summary["rounds"] for loss in round_["losses"]]
    assert losses == reference.losses
    assert summary["final_digests"] == reference.state_digests
    assert summary["bans"] == 0 and summary["aborted_rounds"] == 0
    dense = load_spec(swarm.spec).config.hidden_size * 4  # fp32 activation or gradient per token
    assert summary["boundary_bytes_per_token"] == [{"forward": dense, "backward": dense}] * 2
