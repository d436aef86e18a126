"""A gateway's steps to one stage replica, sent together: one batch frame per pass, not one per
completion (the stage side and the reason: offchain/swarm/sessions.py, "Batches").

Every completion on the gateway relays its step to the next stage when the previous stage answers.
Steps sent in the same turn of the event loop (the completions that shared the previous stage's
pass are all woken by its answer, one after another, before the loop polls again) leave as one
frame on the stream of the first of them, and the answer's outputs go back to each. A lone step
goes out on its own stream as before.

Failure. A batch fails as a whole when its carrier stream broke or the stage refused the frame:
every completion in it gets the failure and, as for its own stream, re-opens that stage and
re-prefills (it cannot tell how far the stage got). A step the stage refused for its own
completion's sake (the stage's "refused" entries) fails that completion alone. A completion that
ends while a batch carries its step waits for that batch before closing its stream (`settled`):
closing a carrier under a batch would fail the other completions in it; one that found the replica
unreachable ends the batch instead (`abandon`), so the others learn it at once rather than at the
call timeout. Relays are per replica *process* (peer id and worker session): a restarted worker's
new sessions never share a frame with streams to its previous life.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from offchain.swarm.client import PeerUnreachable, RemoteError, StageStream

MAX_BATCH = 32  # steps per frame: a stage's default max_batch (offchain/swarm/sessions.py)


@dataclass(frozen=True)
class _Entry:
    session: int  # the key the stage gave the completion's session on `stream`
    stream: StageStream
    steps: list[dict]
    reply: asyncio.Future


class StepRelay:
    """Batches the steps bound for one replica; `send` answers the document the stage would have
    answered on the completion's own stream ({"output"})."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._queued: list[_Entry] = []
        self._carrying: dict[int, asyncio.Task] = {}  # id(stream) -> the batch in flight on it
        self._tasks: set[asyncio.Task] = set()
        self.frames = self.steps = 0  # sent so far: steps / frames is how well completions share frames

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight: dropping it loses nothing."""
        return not self._queued and not self._tasks

    def send(self, session: int, stream: StageStream, steps: list[dict]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        entry = _Entry(session, stream, steps, loop.create_future())
        self._queued.append(entry)
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return entry.reply

    def _flush(self) -> None:
        queued, self._queued = [entry for entry in self._queued if not entry.reply.done()], []
        for start in range(0, len(queued), MAX_BATCH):
            batch = queued[start : start + MAX_BATCH]
            task = asyncio.ensure_future(self._carry(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            for entry in batch:
                self._carrying[id(entry.stream)] = task

    async def _carry(self, batch: list[_Entry]) -> None:
        carrier = batch[0].stream
        self.frames, self.steps = self.frames + 1, self.steps + len(batch)
        refused: dict[int, str] = {}
        try:
            if len(batch) == 1:
                outputs = [(await carrier.request({"steps": batch[0].steps}, timeout=self.timeout))["output"]]
            else:
                request = {"batch": [[entry.session, entry.steps] for entry in batch]}
                reply = await carrier.request(request, timeout=self.timeout)
                outputs, refused = reply.get("outputs"), reply.get("refused", {})
                if not (
                    isinstance(outputs, list)
                    and len(outputs) == len(batch)
                    and isinstance(refused, dict)
                    and set(refused) <= set(range(len(batch)))
                ):
                    raise RemoteError(
                        f"{carrier.peer_id[-8:]} answered a batch of {len(batch)} steps malformed"
                    )
        except asyncio.CancelledError:  # abandoned: its replica is unreachable
            for entry in batch:
                if not entry.reply.done():
                    entry.reply.set_exception(PeerUnreachable(f"{carrier.peer_id[-8:]} unreachable"))
            raise
        except Exception as error:  # noqa: BLE001 - each completion handles it as its own stream's failure
            for entry in batch:
                if not entry.reply.done():
                    entry.reply.set_exception(error)
        else:
            for index, (entry, output) in enumerate(zip(batch, outputs, strict=True)):
                if entry.reply.done():
                    continue
                if index in refused:
                    reason = f"infer refused by {carrier.peer_id[-8:]}: {refused[index]}"
                    entry.reply.set_exception(RemoteError(reason))
                else:
                    entry.reply.set_result({"output": output})
        finally:
            for entry in batch:
                if self._carrying.get(id(entry.stream)) is asyncio.current_task():
                    del self._carrying[id(entry.stream)]

    async def settled(self, stream: StageStream, *, abandon: bool = False) -> None:
        """Wait for the batch in flight (if any) that carries a step of `stream`'s session; with
        `abandon` (its replica is unreachable), end it now: it would only wait for its timeout."""
        task = self._carrying.get(id(stream))
        if task is not None:
            if abandon:
                task.cancel()
            await asyncio.wait({task})
