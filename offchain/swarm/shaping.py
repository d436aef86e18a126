"""Optional WAN emulation in the transport: a bandwidth cap and a one-way latency per message.

Loopback makes every codec look free. To show what a real link does, the driver can route each
message through a `Link` per peer and direction: a message of n bytes waits until the link is
free, occupies it for n * 8 / bandwidth seconds (messages on one link queue behind each other,
as on a real wire), then arrives `latency` seconds later (propagation overlaps other messages).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shaping:
    """Link model for every driver<->worker message; None for either field means unlimited."""

    bandwidth_mbit: float | None = None
    latency_ms: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.bandwidth_mbit) or bool(self.latency_ms)


@dataclass
class Link:
    """One direction of one peer link: serialises transmissions, then adds latency."""

    shaping: Shaping
    _free_at: float = field(default=0.0)

    async def transmit(self, num_bytes: int) -> None:
        if not self.shaping.active:
            return
        now = time.monotonic()
        start = max(now, self._free_at)
        duration = num_bytes * 8 / (self.shaping.bandwidth_mbit * 1e6) if self.shaping.bandwidth_mbit else 0.0
        self._free_at = start + duration
        latency = (self.shaping.latency_ms or 0.0) / 1e3
        await asyncio.sleep(self._free_at + latency - now)


@dataclass
class LinkTable:
    """The links of one process to all its peers, created on first use."""

    shaping: Shaping
    _links: dict[tuple[str, str], Link] = field(default_factory=dict)

    def link(self, peer: str, direction: str) -> Link:
        key = (peer, direction)
        if key not in self._links:
            self._links[key] = Link(self.shaping)
        return self._links[key]
