"""Event polling with a persisted cursor, so a restarted daemon neither misses nor repeats events.

The cursor names the last event a daemon finished handling (block, log index). `poll()` returns
only events after it, in chain order, up to `head - confirmations`; `done(event)` moves the
cursor past an event and writes it to disk atomically. A crash between handling an event and
`done()` re-delivers that one event after the restart, so handlers check chain state before
acting (a claim already challenged is not challenged again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3.contract import Contract
from web3.types import EventData

from offchain.chain.client import ChainClient
from offchain.durable import write_atomic


@dataclass(frozen=True, order=True)
class Cursor:
    block: int
    log_index: int

    @staticmethod
    def load(path: Path, start_block: int) -> Cursor:
        if path.is_file():
            data = json.loads(path.read_text())
            return Cursor(data["block"], data["log_index"])
        return Cursor(start_block, -1)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"block": self.block, "log_index": self.log_index}).encode())


class EventPoller:
    """Delivers a contract's events (of the given names) in chain order, at least once each."""

    def __init__(
        self,
        client: ChainClient,
        contract: Contract,
        event_names: list[str],
        cursor_path: Path,
        *,
        start_block: int = 0,
        confirmations: int = 0,
        max_blocks_per_query: int = 2_000,
    ) -> None:
        self.client = client
        self.contract = contract
        self.events = {name: getattr(contract.events, name)() for name in event_names}
        self.topics = {bytes(HexBytes(event.topic)): name for name, event in self.events.items()}
        self.cursor_path = cursor_path
        self.cursor = Cursor.load(cursor_path, start_block)
        self.confirmations = confirmations
        self.max_blocks_per_query = max_blocks_per_query

    def poll(self) -> list[EventData]:
        """New events after the cursor, oldest first (at most max_blocks_per_query blocks' worth)."""
        head = self.client.rpc("block_number", lambda: self.client.w3.eth.block_number) - self.confirmations
        if head < self.cursor.block:
            return []
        to_block = min(head, self.cursor.block + self.max_blocks_per_query)
        query: dict[str, Any] = {
            "fromBlock": self.cursor.block,
            "toBlock": to_block,
            "address": self.contract.address,
            "topics": [["0x" + topic.hex() for topic in self.topics]],
        }
        logs = self.client.rpc("get_logs", lambda: self.client.w3.eth.get_logs(query))
        decoded = []
        for entry in sorted(logs, key=lambda item: (item["blockNumber"], item["logIndex"])):
            if Cursor(entry["blockNumber"], entry["logIndex"]) <= self.cursor:
                continue
            name = self.topics[bytes(entry["topics"][0])]
            decoded.append(self.events[name].process_log(entry))
        if not decoded and to_block > self.cursor.block:
            # Nothing in these blocks: skip them for good (last log index of a block is unknown,
            # so park the cursor at the start of the next block).
            self.cursor = Cursor(to_block + 1, -1)
            self.cursor.save(self.cursor_path)
        return decoded

    def done(self, event: EventData) -> None:
        """Mark an event handled; a restart resumes after it."""
        self.cursor = Cursor(event["blockNumber"], event["logIndex"])
        self.cursor.save(self.cursor_path)
