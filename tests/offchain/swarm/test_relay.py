"""A gateway's relay of its completions' steps to one replica (offchain/swarm/relay.py), against
streams that answer as a stage would: steps sent in one event-loop turn leave as one frame, a step
the stage refused fails its own completion only, and an unreachable replica's batch is abandoned
at once instead of at its call timeout."""

import asyncio

import pytest

from offchain.swarm.client import PeerUnreachable, RemoteError
from offchain.swarm.relay import StepRelay


class Stream:
    """A stage stream that records the frames it carries; `hang` never answers; the steps of the
    sessions in `refuse` are refused as a stage refuses a batch entry; `answer` is answered to all."""

    peer_id = "12D3KooWstage"

    def __init__(
        self, hang: bool = False, refuse: frozenset[int] = frozenset(), answer: dict | None = None
    ) -> None:
        self.frames: list[dict] = []
        self.hang, self.refuse, self.answer = hang, refuse, answer

    async def request(self, request: dict, *, timeout: float) -> dict:
        self.frames.append(request)
        if self.hang:
            await asyncio.sleep(timeout)
        if self.answer is not None:
            return self.answer
        if "batch" in request:
            sessions = [session for session, _ in request["batch"]]
            outputs = [b"" if session in self.refuse else f"out{session}".encode() for session in sessions]
            refused = {
                i: "over the cache limit" for i, session in enumerate(sessions) if session in self.refuse
            }
            return {"outputs": outputs, "refused": refused} if refused else {"outputs": outputs}
        return {"output": b"alone"}


def test_steps_sent_in_one_turn_leave_as_one_frame_with_their_own_outputs():
    async def scenario() -> tuple[list, list[Stream], StepRelay]:
        relay, streams = StepRelay(timeout=5), [Stream() for _ in range(3)]
        replies = [relay.send(7 + i, stream, [{"tokens": b"x"}]) for i, stream in enumerate(streams)]
        outputs = await asyncio.gather(*replies)
        alone = await relay.send(7, streams[0], [{"tokens": b"y"}])
        return [*outputs, alone], streams, relay

    outputs, streams, relay = asyncio.run(scenario())
    assert outputs == [{"output": b"out7"}, {"output": b"out8"}, {"output": b"out9"}, {"output": b"alone"}]
    assert len(streams[0].frames) == 2 and not streams[1].frames and not streams[2].frames
    assert relay.frames == 2 and relay.steps == 4


def test_a_step_the_stage_refused_in_a_batch_fails_its_completion_alone():
    async def scenario() -> list:
        relay, carrier = StepRelay(timeout=5), Stream(refuse=frozenset({8}))
        replies = [relay.send(7 + i, carrier, [{"tokens": b"x"}]) for i in range(3)]
        return [*await asyncio.gather(*replies, return_exceptions=True), len(carrier.frames)]

    first, refused, third, frames = asyncio.run(scenario())
    assert frames == 1  # the three steps shared one frame
    assert first == {"output": b"out7"} and third == {"output": b"out9"}
    assert isinstance(refused, RemoteError) and "over the cache limit" in str(refused)


@pytest.mark.parametrize(
    "answer",
    [
        {"outputs": [b"a", b"b"]},  # one output short
        {"outputs": [b"a", b"b", b"c"], "refused": {3: "no such entry"}},
        {"outputs": [b"a", b"b", b"c"], "refused": ["over the cache limit"]},
        {"output": b"a"},
    ],
)
def test_a_malformed_batch_answer_fails_each_completion_as_a_refusal(answer):
    """A stage's answer the relay cannot match to its steps: each completion re-prefills (RemoteError,
    what SwarmSession._run handles), none gets a made-up output or an unhandled error."""

    async def scenario() -> list:
        relay, carrier = StepRelay(timeout=5), Stream(answer=answer)
        return await asyncio.gather(
            *(relay.send(7 + i, carrier, [{"tokens": b"x"}]) for i in range(3)), return_exceptions=True
        )

    assert all(
        isinstance(reply, RemoteError) and "malformed" in str(reply) for reply in asyncio.run(scenario())
    )


def test_an_unreachable_replicas_batch_is_abandoned_at_once():
    async def scenario() -> tuple[list, float]:
        relay, carrier, other = StepRelay(timeout=30), Stream(hang=True), Stream()
        replies = [relay.send(1, carrier, [{"tokens": b"x"}]), relay.send(2, other, [{"tokens": b"x"}])]
        await asyncio.sleep(0.05)  # the batch is in flight, its replica silent
        started = asyncio.get_running_loop().time()
        await relay.settled(other, abandon=True)
        results = await asyncio.gather(*replies, return_exceptions=True)
        return results, asyncio.get_running_loop().time() - started

    results, seconds = asyncio.run(scenario())
    assert all(isinstance(result, PeerUnreachable) for result in results)
    assert seconds < 1


@pytest.mark.parametrize("cancelled", [0, 1])
def test_a_step_whose_completion_went_away_before_the_frame_left_is_not_sent(cancelled):
    async def scenario() -> list[dict]:
        relay, streams = StepRelay(timeout=5), [Stream(), Stream()]
        replies = [relay.send(i, stream, [{"tokens": b"x"}]) for i, stream in enumerate(streams)]
        replies[cancelled].cancel()
        kept = replies[1 - cancelled]
        await kept
        return [frame for stream in streams for frame in stream.frames]

    frames = asyncio.run(scenario())
    assert frames == [{"steps": [{"tokens": b"x"}]}]  # the other step went alone
