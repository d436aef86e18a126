"""Finding stage servers: DHT records under (model, stage), refreshed before they expire.

Key: `pm/<model key>/stage/<s>`, one subkey per server peer id, value = `Announcement`. Records
expire after `ttl` seconds unless re-announced, so a crashed worker disappears from discovery by
itself; a live one re-announces every `ttl / 3` seconds and right after it commits a round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hivemind.dht.node import DHTNode
from hivemind.utils import get_dht_time

logger = logging.getLogger(__name__)

DEFAULT_TTL = 15.0


def model_key(spec_digest: str, model_id: int) -> str:
    """Servers of one model find each other; a different spec or model id is a different swarm."""
    return f"{model_id}:{spec_digest[:16]}"


def stage_key(spec_digest: str, model_id: int, stage: int) -> str:
    return f"pm/{model_key(spec_digest, model_id)}/stage/{stage}"


@dataclass(frozen=True)
class Announcement:
    """What a stage server tells the swarm about itself (the authoritative state comes from rpc_info)."""

    peer_id: str
    session: str
    address: str
    round: int


async def announce(node: DHTNode, key: str, record: Announcement, ttl: float = DEFAULT_TTL) -> bool:
    return await node.store(key, asdict(record), get_dht_time() + ttl, subkey=record.peer_id)


async def announce_forever(
    node: DHTNode,
    key: str,
    current: Callable[[], Announcement],
    stop: asyncio.Event,
    ttl: float = DEFAULT_TTL,
) -> None:
    """Re-announce `current()` every ttl/3 s until `stop` is set."""
    while not stop.is_set():
        try:
            await announce(node, key, current(), ttl)
        except Exception:
            logger.warning("re-announce failed; retrying in %.1fs", ttl / 3, exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), ttl / 3)
        except TimeoutError:
            pass


async def lookup(node: DHTNode, key: str) -> list[Announcement]:
    """Every unexpired announcement under `key`, sorted by peer id (a stable order for balancing)."""
    found = await node.get(key, latest=True)
    if found is None or not isinstance(found.value, dict):
        return []
    records = []
    for item in found.value.values():
        value = item.value
        try:
            records.append(Announcement(**value))
        except TypeError:
            logger.warning("ignoring malformed announcement under %s: %r", key, value)
    return sorted(records, key=lambda record: record.peer_id)
