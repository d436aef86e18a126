"""A stage's inference sessions (offchain/swarm/sessions.py) driven in-process through `serve`, the
code behind the `infer` stream: which sessions a pass waits for, batches of several sessions' steps
on one stream (who may send them, what they answer), and where a lone pass runs."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from google.protobuf.wrappers_pb2 import BytesValue

from offchain.model.kv import MIN_ROWS
from offchain.model.spec import load_spec
from offchain.model.tokens import encode_ids
from offchain.swarm.server import StageServer
from offchain.swarm.sessions import SessionHost, SessionLimits
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

    def __init__(self, host: SessionHost, caller: str = "gateway") -> None:
        self._outbox: asyncio.Queue[dict | None] = asyncio.Queue()
        self._replies = FrameReader(host.serve(self._requests(), caller, self._admit), 1 << 24)

    async def _requests(self) -> AsyncIterator[BytesValue]:
        while (document := await self._outbox.get()) is not None:
            for chunk in framed_chunks(pack(document)):
                yield chunk

    @staticmethod
    async def _admit(opening: dict) -> Seed:
        return Seed()

    async def send(self, document: dict | None) -> dict | None:
        self._outbox.put_nowait(document)
        return None if document is None else await self.reply()

    async def reply(self) -> dict | None:
        raw = await self._replies.read()
        return None if raw is None else unpack(raw)


async def compute(fn):
    return fn()


def step(ids: list[int]) -> dict:
    return {"tokens": encode_ids(ids, SPEC), "activation": b""}


def steps(ids: list[int]) -> dict:
    return {"steps": [step(ids)]}


def test_an_opened_session_counts_for_gathering_only_once_it_sends_a_step():
    """A gateway keeps spare sessions open before it needs them: a pass must not wait for them."""

    async def scenario() -> list[int]:
        host = SessionHost(SPEC, 0, compute)
        stepping, spare = Client(host), Client(host)
        counts = []
        assert (await stepping.send({"model": "m"}))["digest"] == "seed"
        assert (await spare.send({"model": "m"}))["digest"] == "seed"
        counts.append(len(host._open_on("seed")))
        await stepping.send(steps([1, 2, 3]))
        counts.append(len(host._open_on("seed")))
        counts.append(len(host.sessions))
        await stepping.send(None)
        await spare.send(None)
        return counts

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_a_batch_steps_the_callers_sessions_in_one_pass_with_their_own_outputs():
    async def scenario() -> None:
        host = SessionHost(SPEC, 0, compute)
        clients = [Client(host) for _ in range(3)]
        keys = [(await client.send({"model": "m"}))["session"] for client in clients]
        alone = [(await client.send(steps([7, 8, 9 + i])))["output"] for i, client in enumerate(clients)]
        passes = host.stats.passes
        batch = [[key, [step([5 + i])]] for i, key in enumerate(keys)]
        outputs = (await clients[0].send({"batch": batch}))["outputs"]
        assert host.stats.passes == passes + 1  # the three steps shared one pass
        assert len(set(outputs)) == 3 and not set(outputs) & set(alone)
        again = [(await client.send(steps([5 + i])))["output"] for i, client in enumerate(clients[1:], 1)]
        assert again != outputs[1:]  # each session's cache grew by its batched step: position 4 now
        assert [host.sessions[key].cache.length for key in keys] == [4, 5, 5]
        for client in clients:
            await client.send(None)

    asyncio.run(scenario())


def test_a_batch_naming_another_callers_session_is_refused_and_leaves_it_untouched():
    async def scenario() -> None:
        host = SessionHost(SPEC, 0, compute)
        victim, attacker = Client(host, caller="gateway"), Client(host, caller="attacker")
        victim_key = (await victim.send({"model": "m"}))["session"]
        attacker_key = (await attacker.send({"model": "m"}))["session"]
        await victim.send(steps([1, 2]))
        refused = await attacker.send({"batch": [[attacker_key, [step([3])]], [victim_key, [step([4])]]]})
        assert f"no session {victim_key} of this caller" in refused["error"]
        assert host.sessions[victim_key].cache.length == 2
        assert "output" in await victim.send(steps([3]))  # the victim's completion goes on
        twice = await victim.send({"batch": [[victim_key, [step([4])]], [victim_key, [step([5])]]]})
        assert "appears twice in one batch" in twice["error"]
        await victim.send(None)
        await attacker.send(None)

    asyncio.run(scenario())


def test_a_batch_entry_over_the_cache_limit_is_refused_alone():
    """One completion's refusal must not cost the completions sharing its frame a re-prefill."""

    async def scenario() -> None:
        host = SessionHost(SPEC, 0, compute, SessionLimits(max_tokens=6))
        big, small = Client(host), Client(host)
        big_key = (await big.send({"model": "m"}))["session"]
        small_key = (await small.send({"model": "m"}))["session"]
        await small.send(steps([1, 2]))
        reply = await big.send({"batch": [[big_key, [step([3, 4, 5, 6, 7])]], [small_key, [step([3])]]]})
        assert set(reply["refused"]) == {0} and "exceed its limit of 6" in reply["refused"][0]
        assert reply["outputs"][0] == b"" and len(reply["outputs"][1]) > 0
        assert host.sessions[big_key].cache.length == 0 and host.sessions[small_key].cache.length == 3
        assert "output" in await big.send(steps([3]))  # the refused session was left as it was
        assert "output" in await small.send(steps([4]))
        await big.send(None)
        await small.send(None)

    asyncio.run(scenario())


def test_steps_admitted_together_count_against_the_cache_limit_before_their_pass_runs():
    """Entries are checked concurrently; the cache grows only once their pass has run (on the compute
    thread): a limit checked against the caches alone would admit them all."""

    async def threaded(fn):
        return await asyncio.to_thread(fn)

    async def scenario() -> tuple[dict, list[int]]:
        host = SessionHost(SPEC, 0, threaded, SessionLimits(max_tokens=6))
        first, second = Client(host), Client(host)
        keys = [(await client.send({"model": "m"}))["session"] for client in (first, second)]
        reply = await first.send({"batch": [[key, [step([1, 2, 3, 4])]] for key in keys]})
        lengths = [host.sessions[key].cache.length for key in keys]
        await first.send(None)
        await second.send(None)
        return reply, lengths

    reply, lengths = asyncio.run(scenario())
    assert set(reply["refused"]) == {1} and "exceed its limit of 6" in reply["refused"][1]
    assert lengths == [4, 0]


def test_a_step_that_would_fail_a_shared_pass_is_refused_before_it_joins_one():
    """Past the context, token bytes that are not ids, an activation of the wrong size: each would
    fail the whole pass it joined (other completions' steps, other gateways'); each is refused alone."""

    async def scenario() -> tuple[dict, list[int]]:
        host = SessionHost(SPEC, 1, compute)
        clients = [Client(host) for _ in range(4)]
        keys = [(await client.send({"model": "m"}))["session"] for client in clients]
        codec, hidden = host._serving.stage.codec, SPEC.config.hidden_size

        def fed(ids: list[int], activation: bytes | None = None) -> dict:
            blank = bytes(codec.payload_bytes((1, len(ids), hidden)))
            return {
                "tokens": encode_ids(ids, SPEC),
                "activation": blank if activation is None else activation,
            }

        batch = [
            [keys[0], [fed([5])]],
            [keys[1], [fed([5] * (SPEC.context + 1))]],
            [keys[2], [{"tokens": b"\x01", "activation": bytes(codec.payload_bytes((1, 1, hidden)))}]],
            [keys[3], [fed([5], activation=b"\x00\x00")]],
        ]
        reply = await clients[0].send({"batch": batch})
        lengths = [host.sessions[key].cache.length for key in keys]
        for client in clients:
            await client.send(None)
        return reply, lengths

    reply, lengths = asyncio.run(scenario())
    assert len(reply["outputs"][0]) > 0 and set(reply["refused"]) == {1, 2, 3}
    assert "the context is 64" in reply["refused"][1]
    assert "not whole" in reply["refused"][2]
    assert "an activation of 2 bytes" in reply["refused"][3]
    assert lengths == [1, 0, 0, 0]


def test_a_session_stepped_only_in_batches_does_not_idle_out():
    async def scenario() -> tuple[set, set, dict | None, bool]:
        host = SessionHost(SPEC, 0, compute, SessionLimits(idle_seconds=0.3))
        carrier, carried, silent = Client(host), Client(host), Client(host)
        keys = [(await client.send({"model": "m"}))["session"] for client in (carrier, carried, silent)]
        # the stage serves a stream only while its replies are read, as hivemind does
        listening = [asyncio.create_task(client.reply()) for client in (carried, silent)]
        for position in range(6):  # 0.6 s of batches, twice the idle limit
            await carrier.send({"batch": [[key, [step([position + 1])]] for key in keys[:2]]})
            await asyncio.sleep(0.1)
        open_keys = set(host.sessions)
        carried_listening = not listening[0].done()
        for client in (carrier, carried, silent):
            await client.send(None)
        silent_reply = await listening[1]
        listening[0].cancel()
        return open_keys, set(keys[:2]), silent_reply, carried_listening

    open_keys, stepped, silent_reply, carried_listening = asyncio.run(scenario())
    assert open_keys == stepped  # the silent session idled out; the batched one did not
    assert "idle" in silent_reply["error"] and carried_listening


def test_a_lone_small_pass_runs_on_the_loop_only_while_the_compute_thread_is_idle():
    async def scenario(idle: bool) -> list[int]:
        handed: list[int] = []

        async def counting(fn):
            handed.append(1)
            return fn()

        host = SessionHost(SPEC, 0, counting, inline=lambda: idle)
        client = Client(host)
        await client.send({"model": "m"})  # builds the serving stage: one job
        await client.send(steps(list(range(1, MIN_ROWS + 2))))  # a long prompt: always the thread
        await client.send(steps([1, 2, 3]))  # a short step: small
        await client.send(steps([4]))  # one token: small
        await client.send(None)
        return handed

    assert len(asyncio.run(scenario(idle=True))) == 2
    assert len(asyncio.run(scenario(idle=False))) == 4


def test_the_compute_thread_is_busy_until_its_job_ends_even_if_its_caller_was_cancelled():
    """A training RPC whose caller went away leaves its job running: a pass must not run beside it."""
    release = threading.Event()

    async def scenario() -> list[bool]:
        server = SimpleNamespace(_executor=ThreadPoolExecutor(max_workers=1), _jobs=set())
        seen = [StageServer._compute_idle(server)]
        caller = asyncio.ensure_future(StageServer._compute(server, release.wait))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        seen.append(StageServer._compute_idle(server))  # cancelled caller, job still running
        release.set()
        server._executor.shutdown(wait=True)
        seen.append(StageServer._compute_idle(server))
        return seen

    assert asyncio.run(scenario()) == [True, False, True]


def test_a_session_takes_one_step_at_a_time_and_steps_carry_bytes():
    """A gateway stepping one session twice at once (its own stream and a batch) would grow its
    cache twice in one pass and fail everyone's pass: the second step is refused instead, and the
    batch's other step served."""

    async def slow(fn):
        await asyncio.sleep(0.2)
        return fn()

    async def scenario() -> tuple[dict, dict, int]:
        host = SessionHost(SPEC, 0, slow)
        stepping, carrier = Client(host), Client(host)
        key = (await stepping.send({"model": "m"}))["session"]
        own_key = (await carrier.send({"model": "m"}))["session"]
        own = asyncio.create_task(stepping.send(steps([1, 2, 3])))
        await asyncio.sleep(0.05)  # its pass is computing
        twice = await carrier.send({"batch": [[own_key, [step([4])]], [key, [step([5])]]]})
        assert "output" in await own
        length = host.sessions[key].cache.length
        garbage = await stepping.send({"steps": [{"tokens": 10**12, "activation": b""}]})
        await stepping.send(None)
        await carrier.send(None)
        return twice, garbage, length

    twice, garbage, length = asyncio.run(scenario())
    assert set(twice["refused"]) == {1} and "already has a step in flight" in twice["refused"][1]
    assert len(twice["outputs"][0]) > 0  # the carrier's own step
    assert length == 3  # the prompt's three positions only
    assert "as bytes" in garbage["error"]


def test_a_pass_held_for_a_session_that_closes_runs_when_it_closes():
    """Two completions shared a pass; one ends (its stream closes) while the other's next step is
    held for it: the close ends the hold, not the hold's deadline."""
    pass_seconds = 0.2

    async def slow(fn):
        await asyncio.sleep(pass_seconds)
        return fn()

    async def scenario() -> float:
        host = SessionHost(SPEC, 0, slow, SessionLimits(max_gather_seconds=10.0))
        staying, leaving = Client(host), Client(host)
        keys = [(await client.send({"model": "m"}))["session"] for client in (staying, leaving)]
        prompts = [[keys[0], [step([1, 2, 3])]], [keys[1], [step([4, 5, 6])]]]
        await staying.send({"batch": prompts})  # one pass: the two are pass-mates
        started = time.perf_counter()
        held = asyncio.ensure_future(staying.send(steps([7])))  # held for `leaving`'s step
        await asyncio.sleep(pass_seconds / 4)
        await leaving.send(None)
        assert await leaving.reply() is None  # its session ended
        await held
        await staying.send(None)
        assert host.stats.holds_expired == 0
        return time.perf_counter() - started

    # Ended by the close: ~1.25 x pass_seconds. Without, the hold alone would last 2 x pass_seconds
    # before the pass (3 x in all).
    assert asyncio.run(scenario()) < 2.5 * pass_seconds
