"""Text completion on top of any forward-only pipeline: the swarm (Driver.infer) or one process.

The model sees fixed-shape micro-batches (micro_batch_size x context), so a request takes one
row, right-padded: with causal attention the padding cannot change the logits of the prompt's
positions. Each new token is one full pipeline pass (no KV cache yet: fine for small models);
concurrent completions share passes, one row each (`PassBatcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer

from offchain.errors import UserError
from offchain.model.spec import ModelSpec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer

Forward = Callable[[bytes], Awaitable[tuple[bytes, list[int]]]]
"""tokens bytes -> (logits float32 [B, T, vocab], round each stage served)."""

MAX_TOP_K = 1024


@dataclass(frozen=True)
class Sampling:
    """How to pick each token: greedy when temperature is 0, else softmax(logits / T) over the top k."""

    max_tokens: int
    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 0


@dataclass
class Completion:
    prompt: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)


def check_request(spec: ModelSpec, tokenizer: Tokenizer, prompt: str, sampling: Sampling) -> list[int]:
    """The prompt's token ids (by the spec's tokenizer), or a UserError naming what is wrong."""
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
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
    return ids


def pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    if sampling.top_k is not None:
        cutoff = np.sort(scaled)[-sampling.top_k]
        scaled = np.where(scaled >= cutoff, scaled, -np.inf)
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return int(rng.choice(len(probabilities), p=probabilities))


class PassBatcher:
    """Shares forward passes between concurrent completions: a pass carries up to
    micro_batch_size requests, one per row. Rows never mix (causal attention within a row,
    per-token norms) and the batch shape never changes, so a row's logits do not depend on what
    the other rows hold: batching changes throughput, not results. Requests that arrive while
    `depth` passes are in flight wait and leave together in the next pass (no timer: an idle
    batcher sends a lone request at once); depth > 1 lets the stages of a pipeline overlap."""

    def __init__(self, forward: Forward, spec: ModelSpec, depth: int = 1) -> None:
        self.forward, self.spec, self.depth = forward, spec, depth
        self.waiting: list[tuple[list[int], asyncio.Future]] = []
        self.in_flight: set[asyncio.Task] = set()
        self.passes = 0
        self.rows = 0

    async def next_logits(self, ids: list[int]) -> tuple[np.ndarray, list[int]]:
        """Logits (vocab,) at the last position of `ids`, and the round each stage served."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((list(ids), future))
        self._launch()
        return await future

    def _launch(self) -> None:
        while self.waiting and len(self.in_flight) < self.depth:
            rows = self.waiting[: self.spec.micro_batch_size]
            del self.waiting[: len(rows)]
            task = asyncio.create_task(self._run(rows))
            self.in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        self._launch()

    async def _run(self, rows: list[tuple[list[int], asyncio.Future]]) -> None:
        spec = self.spec
        try:
            batch = torch.zeros((spec.micro_batch_size, spec.context), dtype=torch.long)
            for row, (ids, _) in enumerate(rows):
                batch[row, : len(ids)] = torch.tensor(ids)
            raw, rounds = await self.forward(encode_tokens(batch, spec))
            self.passes, self.rows = self.passes + 1, self.rows + len(rows)
            logits = np.frombuffer(raw, dtype="<f4").reshape(
                spec.micro_batch_size, spec.context, spec.config.vocab_size
            )
            for row, (ids, future) in enumerate(rows):
                if not future.done():  # its completion may have been cancelled meanwhile
                    future.set_result((logits[row, len(ids) - 1].copy(), rounds))
        except asyncio.CancelledError:
            for _, future in rows:
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - every waiting completion gets the pass's failure
            for _, future in rows:
                if not future.done():
                    future.set_exception(error)


async def complete(
    source: Forward | PassBatcher, spec: ModelSpec, tokenizer: Tokenizer, prompt: str, sampling: Sampling
) -> Completion:
    """Generate `sampling.max_tokens` tokens; pass a shared PassBatcher to batch with other requests."""
    ids = check_request(spec, tokenizer, prompt, sampling)
    batcher = source if isinstance(source, PassBatcher) else PassBatcher(source, spec)
    start, rng = len(ids), np.random.default_rng(sampling.seed)
    rounds: list[int] = []
    for _ in range(sampling.max_tokens):
        logits, rounds = await batcher.next_logits(ids)
        ids.append(pick(logits, sampling, rng))
    text = tokenizer.decode(ids[start:], skip_special_tokens=False)
    return Completion(prompt, text, ids[start:], rounds)


def local_forward(spec: ModelSpec, states: list[bytes], rounds: list[int]) -> Forward:
    """Every stage in this process, from the given states: the single-process baseline."""
    stages = [StageTrainer(spec, stage, state=state) for stage, state in enumerate(states)]

    async def forward(tokens: bytes) -> tuple[bytes, list[int]]:
        activation = b""
        for stage in stages:
            activation = stage.forward_only(activation, tokens)
        return activation, rounds

    return forward
