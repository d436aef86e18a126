"""Stage members serving their stage keys over real hivemind P2P, from a background thread of the
test process: what a verifier asks (as a validator) to decrypt the claims it replays."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from eth_account.signers.local import LocalAccount

from offchain.chain.protocol import Protocol
from offchain.model.spec import ModelSpec
from offchain.storage.crypto import StageKey
from offchain.swarm.authz import Access
from offchain.swarm.discovery import Announcement, announce_forever, stage_key
from offchain.swarm.identity import Identity
from offchain.swarm.keyshare import HeldKey, StageKeyKeeper, StageKeyring
from offchain.swarm.node import NetworkConfig, shutdown_node, start_node, visible_maddrs
from offchain.swarm.server import StageServer


@contextlib.contextmanager
def serving_stage_keys(
    protocol: Protocol, spec: ModelSpec, model_id: int, members: list[LocalAccount], keys: list[StageKey]
) -> Iterator[str]:
    """One StageServer per stage (member `members[s]`, keeper of `keys[s]`), announced in a fresh
    DHT; yields the first node's multiaddr for --initial-peers. Everything is shut down on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stop = asyncio.Event()
    nodes, servers, tasks = [], [], []
    folder = tempfile.TemporaryDirectory(prefix="stage-keys-")

    async def start() -> str:
        for stage, (member, key) in enumerate(zip(members, keys, strict=True)):
            peers = await visible_maddrs(nodes[0]) if nodes else ()
            node = await start_node(NetworkConfig(initial_peers=tuple(peers)))
            nodes.append(node)
            keyring = StageKeyring(Path(folder.name) / f"stage{stage}", model_id, stage)
            keyring.add(HeldKey(key, 0))
            keeper = StageKeyKeeper(protocol, keyring, member)
            identity = Identity.from_key(member.key)
            access = Access.on_chain(protocol, model_id)
            server = StageServer(
                spec,
                stage,
                identity,
                model_id=model_id,
                session="keys",
                state_file=None,
                key_keeper=keeper,
                authorizer=access.authorizer(),
                binder=access.binder(identity, node.peer_id.to_base58()),
            )
            await server.start(node.p2p, None)
            servers.append(server)
            record = Announcement(node.peer_id.to_base58(), "keys", member.address, 0)
            dht_key = stage_key(spec.digest(), model_id, stage)
            tasks.append(asyncio.create_task(announce_forever(node, dht_key, lambda r=record: r, stop)))
        return (await visible_maddrs(nodes[0]))[0]

    async def shutdown() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            server.stop()
        for node in nodes:
            await shutdown_node(node)

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=120)
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        folder.cleanup()
