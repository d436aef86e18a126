"""Text completion on top of any forward-only pipeline: the swarm (Driver.infer) or one process.

The model sees fixed-shape micro-batches (micro_batch_size x context), so a request is placed in
row 0, right-padded: with causal attention the padding cannot change the logits of the prompt's
positions. Each new token is one full pipeline pass (no KV cache yet: fine for small models).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from offchain.errors import UserError
from offchain.model.data import encode_tokens
from offchain.model.spec import ModelSpec
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


def check_request(spec: ModelSpec, prompt: str, sampling: Sampling) -> list[int]:
    """The prompt's token ids, or a UserError naming what is wrong with the request."""
    if spec.vocab_size != 256:
        raise UserError(f"text completion needs the byte-level vocabulary (256), not {spec.vocab_size}")
    ids = list(prompt.encode("utf-8"))
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
    if sampling.top_k is not None and not 1 <= sampling.top_k <= min(MAX_TOP_K, spec.vocab_size):
        raise UserError(f"top_k must be between 1 and {min(MAX_TOP_K, spec.vocab_size)}")
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


async def complete(forward: Forward, spec: ModelSpec, prompt: str, sampling: Sampling) -> Completion:
    ids = check_request(spec, prompt, sampling)
    start, rng = len(ids), np.random.default_rng(sampling.seed)
    rounds: list[int] = []
    for _ in range(sampling.max_tokens):
        batch = torch.zeros((spec.micro_batch_size, spec.context), dtype=torch.long)
        batch[0, : len(ids)] = torch.tensor(ids)
        raw, rounds = await forward(encode_tokens(batch, spec))
        logits = np.frombuffer(raw, dtype="<f4").reshape(spec.micro_batch_size, spec.context, spec.vocab_size)
        ids.append(pick(logits[0, len(ids) - 1], sampling, rng))
    text = bytes(ids[start:]).decode("utf-8", errors="replace")
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
