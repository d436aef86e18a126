"""A driver that lies about the data is refused by the stage it lies to, before anything is computed
or recorded, and an honest step still trains: two real StageServers (stage 0 and the last stage) on
hivemind P2P in this process, called by a driver written out here, so their traces can be read."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import torch

from offchain.data.shipped import shipped_dataset
from offchain.model.data import micro_batch
from offchain.model.records import MessageHeader
from offchain.model.spec import load_spec
from offchain.model.tokens import encode_tokens
from offchain.proofs.provenance import Batching, check_data
from offchain.swarm.authz import Access, Domain, make_binding
from offchain.swarm.client import RemoteError, call
from offchain.swarm.identity import Identity
from offchain.swarm.local import LOCAL_ADDRESS, LOCAL_KEY
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, visible_maddrs
from offchain.swarm.server import StageServer
from offchain.swarm.wire import Limits
from tests.offchain.swarm.conftest import write_spec

pytestmark = pytest.mark.slow

ME = Identity.from_key(LOCAL_KEY)  # the off-chain swarm's one allowed address: driver and workers
OWN = ME.address.lower()  # so every message is addressed to it (the header's recipient)


class LyingDriver:
    """Sends stage 0 and the last stage (1) whatever it is told to, signed as the allowed address."""

    def __init__(self, spec, node, peers: list[str]) -> None:
        self.spec, self.node, self.peers = spec, node, peers
        peer_id = node.peer_id.to_base58()
        binding = make_binding(ME, Domain.offchain(0), peer_id, int(time.time()) + 600)
        self.base = {"model": spec.digest(), "model_id": 0, "binding": binding}
        self.limits = Limits.of(spec, 0)

    async def call(self, stage: int, method: str, **request) -> dict:
        peer, limit = self.peers[stage], self.limits.reply(method)
        return await call(
            self.node.p2p, peer, method, {**self.base, **request}, timeout=30, reply_limit=limit
        )

    async def refused(self, stage: int, method: str, **request) -> str:
        with pytest.raises(RemoteError) as caught:
            await self.call(stage, method, **request)
        return str(caught.value)

    def forward(self, mb: int, tokens: torch.Tensor, targets: torch.Tensor, source) -> dict:
        """Stage 0's forward request for micro-batch `mb` of round 0 step 0."""
        header = MessageHeader(0, 0, 0, 0, mb, "forward", recipient=OWN)
        message = ME.sign(header, [b"", encode_tokens(tokens, self.spec)])
        where = {"round": 0, "step": 0, "micro_batch": mb, "source": [list(row) for row in source]}
        where["recipient"] = OWN  # the next hop the stage signs its output for
        return {**where, "message": message, "targets": encode_tokens(targets, self.spec)}

    async def honest(self, mb: int) -> None:
        """Micro-batch `mb` as an honest driver sends it: forward, loss and backward."""
        request = self.forward(mb, *micro_batch(self.spec, None, 0, 0, mb))
        relayed = (await self.call(0, "forward", **request))["message"]
        grad = (await self.call(1, "forward_backward", **{**request, "message": relayed}))["message"]
        await self.call(0, "backward", **{**request, "message": grad})


async def _lies_then_an_honest_step(spec) -> tuple[dict[str, str], list, list]:
    nodes, servers = [], []
    try:
        for stage in (0, 1):
            peers = tuple(await visible_maddrs(nodes[0])) if nodes else ()
            node = await start_node(NetworkConfig(initial_peers=peers))
            access = Access.off_chain(0, [LOCAL_ADDRESS])
            server = StageServer(
                spec,
                stage,
                ME,
                model_id=0,
                session=f"s{stage}",
                state_file=None,
                authorizer=access.authorizer(),
                binder=access.binder(ME, node.peer_id.to_base58()),
            )
            await server.start(node.p2p, None)
            nodes.append(node)
            servers.append(server)
        client = await start_node(NetworkConfig(initial_peers=tuple(await visible_maddrs(nodes[0]))))
        nodes.append(client)
        driver = LyingDriver(spec, client, [node.peer_id.to_base58() for node in nodes[:2]])
        for stage in (0, 1):
            await driver.call(stage, "begin_round", round=0)

        tokens, targets, source = micro_batch(spec, None, 0, 0, 0)
        other_tokens, other_targets, other_source = micro_batch(spec, None, 0, 0, 1)
        noise = torch.randint(
            3, spec.config.vocab_size, tokens.shape, generator=torch.Generator().manual_seed(0)
        )
        refusals = {
            "foreign tokens": await driver.refused(0, "forward", **driver.forward(0, noise, targets, source)),
            "rows not drawn": await driver.refused(
                0, "forward", **driver.forward(0, other_tokens, other_targets, other_source)
            ),
        }
        # Stage 0 relays (and signs) the targets the driver gives it; the last stage checks them.
        lie = driver.forward(0, tokens, targets.roll(1, dims=1), source)
        relayed = (await driver.call(0, "forward", **lie))["message"]
        refusals["wrong targets"] = await driver.refused(1, "forward_backward", **{**lie, "message": relayed})
        # Nothing was computed for the lies: neither stage has a step to apply, the last stage has
        # not even begun a trace, stage 0's holds no record.
        for stage in (0, 1):
            refusals[f"apply_step {stage}"] = await driver.refused(stage, "apply_step", round=0, step=0)
        assert servers[0].trainer.trace.records == [] and servers[1].trainer.trace is None

        for mb in range(spec.micro_batches):
            await driver.honest(mb)
        for stage in (0, 1):
            await driver.call(stage, "apply_step", round=0, step=0)
        return refusals, [server.trainer.trace for server in servers], source
    finally:
        for server in servers:
            server.stop()
        for node in nodes:
            await shutdown_node(node)


def test_a_lying_driver_is_refused_before_anything_is_recorded_and_honest_steps_train(tmp_path, caplog):
    spec = load_spec(write_spec(tmp_path, stages=[[0, 2], [2, 3]]))
    with caplog.at_level(logging.WARNING, logger="offchain.swarm.server"):
        refusals, traces, source = asyncio.run(_lies_then_an_honest_step(spec))

    where = "NotTheData: round 0 step 0 micro-batch 0: "
    assert where + "its token ids are not the data set's rows (first at row 0" in refusals["foreign tokens"]
    assert refusals["rows not drawn"].endswith(where + "its rows are not the data set's draw for this step")
    assert where + "its targets are not the data set's rows (first at row 0" in refusals["wrong targets"]
    assert refusals["apply_step 0"].endswith("step 0: no gradients yet for micro-batches [0, 1]")
    assert refusals["apply_step 1"].endswith("apply_step(0, 0) but this stage is at no round yet")
    logged = [r.getMessage() for r in caplog.records if "not the data set's" in r.getMessage()]
    assert len(logged) == 3 and logged[0].startswith("stage 0 refused forward from peer ")
    assert logged[2].startswith("stage 1 refused forward_backward from peer ")

    # The honest step trained and recorded exactly its own rows: what a verifier accepts.
    dataset = shipped_dataset(spec.manifest_cid)
    for stage, trace in enumerate(traces):
        assert len(trace.records) == 1 and trace.records[0].micro_batches[0].source == source
        assert check_data(trace, dataset, Batching.of(spec), targets=stage == 1) is None
