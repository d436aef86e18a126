"""A stage's inference sessions (offchain/swarm/sessions.py) driven in-process through `serve`, the
code behind the `infer` stream: which sessions a pass waits for."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.wrappers_pb2 import BytesValue

from offchain.model.spec import load_spec
from offchain.model.tokens import encode_ids
from offchain.swarm.sessions import SessionHost
from offchain.swarm.wire import FrameReader, framed_chunks, pack, unpack

SPEC = load_spec(Path(__file__).resolve().parents[3] / "specs" / "tiny.json")


@dataclass(frozen=True)
class Seed:
    """The stage's freshly initialised weights (ServingStage builds them from state None)."""

    round: int = 0
    digest: str = "seed"
    state: None = None


class Client:
    """One session's side of an `infer` stream: frames go in through a queue, replies are read."""

    def __init__(self, host: SessionHost) -> None:
        self._outbox: asyncio.Queue[dict | None] = asyncio.Queue()
        self._replies = FrameReader(host.serve(self._requests(), self._admit), 1 << 24)

    async def _requests(self) -> AsyncIterator[BytesValue]:
        while (document := await self._outbox.get()) is not None:
            for chunk in framed_chunks(pack(document)):
                yield chunk

    @staticmethod
    async def _admit(opening: dict) -> Seed:
        return Seed()

    async def send(self, document: dict | None) -> dict | None:
        self._outbox.put_nowait(document)
        if document is None:
            return None
        raw = await self._replies.read()
        return None if raw is None else unpack(raw)


async def compute(fn):
    return fn()


def test_an_opened_session_counts_for_gathering_only_once_it_sends_a_step():
    """A gateway keeps spare sessions open before it needs them: a pass must not wait for them."""

    async def scenario() -> list[int]:
        host = SessionHost(SPEC, 0, compute)
        stepping, spare = Client(host), Client(host)
        counts = []
        assert (await stepping.send({"model": "m"}))["digest"] == "seed"
        assert (await spare.send({"model": "m"}))["digest"] == "seed"
        counts.append(host._open_on("seed"))
        await stepping.send({"steps": [{"tokens": encode_ids([1, 2, 3], SPEC), "activation": b""}]})
        counts.append(host._open_on("seed"))
        counts.append(len(host.sessions))
        await stepping.send(None)
        await spare.send(None)
        return counts

    assert asyncio.run(scenario()) == [0, 1, 2]
