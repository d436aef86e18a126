"""Text generation over any pipeline of KV-cached stages: the swarm (offchain/swarm/inference.py)
or every stage in this process (`LocalPipeline`, the single-process baseline).

A completion opens one `Session` on the pipeline: its prompt goes through as one step, then each
sampled token as a one-token step; the stages keep the keys and values in between (model/kv.py),
and concurrent sessions share passes (model/batching.py). Tokens come out one by one
(`generate`); `TextStream` turns them into text increments that never split a UTF-8 character nor
show the start of a stop sequence that may still complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from tokenizers import Tokenizer

from offchain.errors import UserError
from offchain.model.batching import PassQueue, RunPass
from offchain.model.kv import RequestCache, ServingStage, Step
from offchain.model.spec import ModelSpec
from offchain.model.tokens import EOS_TOKEN, decode_ids, encode_ids

MAX_TOP_K = 1024

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sampling:
    """Greedy when temperature is 0, else softmax(logits / T) restricted to the top k tokens and to
    the smallest set whose probability reaches top_p; `seed` fixes the draws."""

    max_tokens: int
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0


class Session(Protocol):
    """One completion's passage through a pipeline; `rounds`/`digests`: what each stage served."""

    rounds: list[int]
    digests: list[str]

    async def step(self, ids: list[int]) -> np.ndarray:
        """Feed the next positions' token ids; returns the float32 logits of the last one."""
        ...


class Pipeline(Protocol):
    def session(self) -> contextlib.AbstractAsyncContextManager[Session]: ...


def check_request(spec: ModelSpec, ids: list[int], sampling: Sampling) -> None:
    """A UserError naming what is wrong with a request of prompt `ids`, before any work."""
    if not ids:
        raise UserError("the prompt is empty")
    if sampling.max_tokens < 1:
        raise UserError(f"max_tokens must be at least 1, not {sampling.max_tokens}")
    if len(ids) + sampling.max_tokens > spec.context:
        raise UserError(
            f"prompt ({len(ids)} tokens) + max_tokens ({sampling.max_tokens}) exceeds the context window "
            f"of {spec.context} tokens"
        )
    if sampling.temperature < 0:
        raise UserError(f"temperature must be >= 0, not {sampling.temperature}")
    top_k_limit = min(MAX_TOP_K, spec.config.vocab_size)
    if sampling.top_k is not None and not 1 <= sampling.top_k <= top_k_limit:
        raise UserError(f"top_k must be between 1 and {top_k_limit}")
    if not 0 < sampling.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], not {sampling.top_p}")


def pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    if sampling.top_k is not None:
        cutoff = np.sort(scaled)[-sampling.top_k]
        scaled = np.where(scaled >= cutoff, scaled, -np.inf)
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    if sampling.top_p < 1:
        order = np.argsort(-probabilities, kind="stable")
        keep = np.cumsum(probabilities[order]) - probabilities[order] < sampling.top_p
        kept = np.zeros_like(probabilities)
        kept[order[keep]] = probabilities[order[keep]]
        probabilities = kept / kept.sum()
    return int(rng.choice(len(probabilities), p=probabilities))


def eos_id(tokenizer: Tokenizer) -> int | None:
    return tokenizer.token_to_id(EOS_TOKEN)


async def generate(
    session: Session, ids: list[int], sampling: Sampling, stop_ids: Iterable[int] = ()
) -> AsyncIterator[int]:
    """Token ids as they are sampled: up to max_tokens, ending early after a stop id (yielded too)."""
    stop, rng = set(stop_ids), np.random.default_rng(sampling.seed)
    logits = await session.step(ids)
    for produced in range(1, sampling.max_tokens + 1):
        token = pick(logits, sampling, rng)
        yield token
        if token in stop or produced == sampling.max_tokens:
            return
        logits = await session.step([token])


@dataclass
class TextStream:
    """Generated token ids in, text increments out. A byte-level token may end inside a UTF-8
    character (held back until it completes), and the tail that could still become a stop sequence
    is held back until it cannot; text from a stop sequence on is never shown."""

    tokenizer: Tokenizer
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    shown: str = ""
    stopped: bool = False

    def push(self, token: int) -> str:
        """The text that can be shown now that `token` arrived ("" if none); sets `stopped` when a
        stop sequence appeared."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        # Nothing shown can start a stop sequence: the last (longest stop - 1) characters are held back.
        hits = [text.find(stop, len(self.shown)) for stop in self.stop]
        found = [hit for hit in hits if hit >= 0]
        if found:
            self.stopped = True
            return self._show(text[: min(found)])
        hold = max((len(stop) - 1 for stop in self.stop), default=0)
        return self._show(text[: len(text) - hold] if hold else text)

    def flush(self) -> str:
        """At the end of the completion: whatever was held back (a partial character is dropped)."""
        if self.stopped:
            return ""
        return self._show(self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd"))

    def _show(self, text: str) -> str:
        """Byte-level decoding only ever appends, so the text shown is a prefix of `text`."""
        if len(text) <= len(self.shown):
            return ""
        delta, self.shown = text[len(self.shown) :], text
        return delta


@dataclass(frozen=True)
class Delta:
    """Text that can be shown, and the token ids generated since the previous delta."""

    text: str
    token_ids: list[int]


@dataclass
class Completion:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    rounds: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


async def stream_completion(
    session: Session,
    tokenizer: Tokenizer,
    ids: list[int],
    sampling: Sampling,
    stop: tuple[str, ...] = (),
    result: Completion | None = None,
) -> AsyncIterator[Delta]:
    """Deltas of the completion of prompt `ids` as they come; `result` (if given) collects the
    whole completion, its finish reason and what each stage served."""
    result = result if result is not None else Completion()
    eos = eos_id(tokenizer)
    text = TextStream(tokenizer, stop)
    pending: list[int] = []
    try:
        async for token in generate(session, ids, sampling, [] if eos is None else [eos]):
            result.token_ids.append(token)
            pending.append(token)
            piece = "" if token == eos else text.push(token)
            if token == eos or text.stopped:
                result.finish_reason = "stop"
            if piece or result.finish_reason == "stop":
                result.text += piece
                yield Delta(piece, pending)
                pending = []
            if text.stopped:
                break
        tail = text.flush()
        result.text += tail
        if tail or pending:
            yield Delta(tail, pending)
    finally:
        result.rounds, result.digests = list(session.rounds), list(session.digests)


async def complete(
    pipeline: Pipeline, tokenizer: Tokenizer, ids: list[int], sampling: Sampling, stop: tuple[str, ...] = ()
) -> Completion:
    """The whole completion of prompt `ids` (no streaming)."""
    result = Completion()
    async with pipeline.session() as session:
        async for _ in stream_completion(session, tokenizer, ids, sampling, stop, result):
            pass
    return result


class LocalPipeline:
    """Every stage in this process from the given states: the single-process baseline. The same
    ServingStage code, wire bytes and pass batching as the swarm's stages."""

    def __init__(
        self, spec: ModelSpec, states: list[bytes | None], rounds: list[int], max_batch: int = 32
    ) -> None:
        self.spec, self.rounds = spec, rounds
        self.stages = [ServingStage(spec, stage, state) for stage, state in enumerate(states)]
        self.digests = ["local"] * len(states)
        self.queues = [PassQueue(self._runner(stage), max_batch) for stage in self.stages]

    @staticmethod
    def _runner(stage: ServingStage) -> RunPass:
        async def run(steps: list[Step]) -> list[bytes]:
            return stage.run(steps)

        return run

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LocalSession]:
        yield LocalSession(self)


class LocalSession:
    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        self.rounds, self.digests = list(pipeline.rounds), list(pipeline.digests)
        self.caches = [RequestCache() for _ in pipeline.stages]

    async def step(self, ids: list[int]) -> np.ndarray:
        spec = self.pipeline.spec
        tokens = decode_ids(encode_ids(ids, spec), spec)
        output = b""
        for queue, cache in zip(self.pipeline.queues, self.caches, strict=True):
            output = await queue.submit(Step(cache, tokens, output))
        return np.frombuffer(output, dtype="<f4")
