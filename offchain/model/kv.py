"""Serving one stage forward-only, with a KV cache per request and passes shared by requests.

A request (one completion) owns a `RequestCache` on every stage it crosses: transformers'
`DynamicCache` holding its layers' keys and values for every position seen so far. Its prompt is
one pass; each generated token is then a one-token pass at the next position: nothing is computed
twice.

A pass carries the steps of several requests, each with the same number of new positions (the
batcher groups them so: queries are never padded). The layers' projections and MLPs run on the
whole pass at once; attention runs row by row over each request's own keys (`_PassCache` extends
each request's DynamicCache and hands the layer the per-row keys, `_row_attention` attends over
them, causal within the new positions), so caches of different lengths need no padding and no mask
over other requests' positions.

Batch invariance: a request's numbers must not depend on what else shares its pass, or a
completion would change with the load. Attention is per row by construction; the matrix products
are not: MKL picks their kernel by row count (one row: a GEMV; a handful; many), and within "many"
a row's result does not depend on how many rows there are (measured on this CPU for these shapes:
16 rows and more; tests/offchain/model/test_kv.py checks the whole stage). So every pass is padded
with idle rows to at least `MIN_ROWS` token rows. A completion is then the same alone, batched,
and in the single-process reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from offchain.model.profile import apply_profile, autocast
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer

MIN_ROWS = 16
ROW_ATTENTION = "protocol-models-rows"
SERVING_THREADS = 1
"""Serving passes are a few token rows: a second thread only adds synchronisation, and on a
machine shared by several stage workers, threads spinning at OpenMP barriers (measured on 2
cores: first token 0.2-0.46 s with the small spec's 2 threads, 14 ms with 1) starve the others.
The single-process reference serves with the same count, so results stay equal."""


@dataclass
class RequestCache:
    """One request's keys and values on one stage, and how many positions they cover."""

    cache: DynamicCache = field(default_factory=DynamicCache)
    length: int = 0
    # For the pass queue's gathering (batching.py): when its latest pass here started, and whether a
    # pass held for its next step ran out of time (not waited for again until that step comes).
    served_at: float = -math.inf
    late: bool = False

    @property
    def nbytes(self) -> int:
        return sum(
            layer.keys.nbytes + layer.values.nbytes for layer in self.cache.layers if layer.is_initialized
        )


@dataclass(frozen=True, eq=False)
class Step:
    """One request's part of a pass: its cache, the token ids of its new positions [n] and, on the
    stages after the first, the previous stage's encoded output for those positions."""

    cache: RequestCache
    tokens: torch.Tensor
    activation: bytes = b""


class _PassCache:
    """What the layers of one pass use as `past_key_values`: each request's DynamicCache grows by its
    row of new keys and values, and the layer gets the per-row keys and values (for `_row_attention`).
    The idle rows after the requests' keep nothing."""

    def __init__(self, caches: list[DynamicCache]) -> None:
        self.caches = caches

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        rows = [
            cache.update(keys[row : row + 1], values[row : row + 1], layer_idx)
            for row, cache in enumerate(self.caches)
        ]
        return [row_keys for row_keys, _ in rows], [row_values for _, row_values in rows]


def _row_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: list[torch.Tensor],
    value: list[torch.Tensor],
    attention_mask: list[torch.Tensor],
    scaling: float,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, one request at a time over its own keys (see the module doc);
    the idle rows after the requests' (no keys) get zeros: their outputs are never read."""
    outputs = [
        sdpa_attention_forward(
            module, query[row : row + 1], key[row], value[row], attention_mask[row], scaling=scaling
        )[0]
        for row in range(len(key))
    ]
    batch, heads, width, dim = query.shape
    idle = query.new_zeros(batch - len(key), width, heads, dim)
    return torch.cat([*outputs, idle]), None


AttentionInterface.register(ROW_ATTENTION, _row_attention)


def _causal_mask(length: int, width: int) -> torch.Tensor:
    """[1, 1, width, length + width]: new position j (at length + j) sees keys 0..length + j."""
    return (torch.arange(length + width)[None, :] <= length + torch.arange(width)[:, None])[None, None]


class ServingStage:
    """One stage's weights (one committed state), forward-only, for requests with KV caches. The
    stage is built by StageTrainer, so a state of another spec or stage is refused the same way;
    only the module, the wire codec and the frozen embedding are kept (no optimizer moments)."""

    def __init__(self, spec: ModelSpec, stage: int, state: bytes | None) -> None:
        trainer = StageTrainer(spec, stage, state=state)
        self.spec, self.stage = spec, stage
        self.module = trainer.module.eval()
        self.module.config._attn_implementation = ROW_ATTENTION  # this module's own config
        self.codec, self.frozen = trainer.codec, trainer.frozen_embedding
        self.device = trainer.device
        self.is_first, self.is_last = trainer.is_first, trainer.is_last

    def refusal(self, start: int, width: int, activation: bytes) -> str | None:
        """Why a step of `width` new positions from position `start` cannot join a pass (past the
        context, or an activation of the wrong size for this stage), or None. Checked before the
        step is queued: inside a shared pass the same fault would fail every request in it."""
        if start + width > self.spec.context:
            return f"a request would reach {start + width} positions; the context is {self.spec.context}"
        if not self.is_first:
            expected = self.codec.payload_bytes((1, width, self.spec.config.hidden_size))
            if len(activation) != expected:
                return f"an activation of {len(activation)} bytes for {width} positions; {expected} expected"
        return None

    def run(self, steps: list[Step]) -> list[bytes]:
        """One pass over `steps` (equal numbers of new positions). Returns per step the encoded
        activation of its new positions for the next stage or, on the last stage, the float32
        logits of its last position. Each step's cache grows by its new positions."""
        width = len(steps[0].tokens)
        if any(len(step.tokens) != width for step in steps):
            raise ValueError("the steps of one pass must have the same number of new positions")
        idle = max(0, -(-MIN_ROWS // width) - len(steps))  # rows of padding after the requests'
        lengths = [step.cache.length for step in steps]
        reach = max(lengths) + width
        if reach > self.spec.context:
            raise ValueError(f"a request would reach {reach} positions; the context is {self.spec.context}")
        positions = torch.tensor(lengths + [0] * idle)[:, None] + torch.arange(width)[None]
        masks = [_causal_mask(step.cache.length, width).to(self.device) for step in steps]
        blank = torch.zeros(width, dtype=torch.long)
        tokens = torch.stack([step.tokens for step in steps] + [blank] * idle)
        apply_profile(self.spec.profile)
        torch.set_num_threads(SERVING_THREADS)
        with torch.inference_mode():
            tokens = tokens.to(self.device)
            hidden = tokens if self.is_first else self._activations(steps, tokens, idle)
            with autocast(self.spec.profile):
                output = self.module(
                    hidden,
                    position_ids=positions.to(self.device),
                    attention_mask=masks,
                    past_key_values=_PassCache([step.cache.cache for step in steps]),
                ).float()
            for step in steps:
                step.cache.length += width
            if self.is_last:
                logits = output[: len(steps), -1].cpu().numpy().astype("<f4")
                return [row.tobytes() for row in logits]
            if self.frozen is not None:
                output = output - self.frozen(tokens)
            return [self.codec.encode(output[row : row + 1].cpu()) for row in range(len(steps))]

    def _activations(self, steps: list[Step], tokens: torch.Tensor, idle: int) -> torch.Tensor:
        width, hidden = tokens.shape[1], self.spec.config.hidden_size
        rows = [self.codec.decode(step.activation, (1, width, hidden)) for step in steps]
        rows += [torch.zeros(1, width, hidden)] * idle
        stacked = torch.cat(rows).to(self.device)
        return stacked + self.frozen(tokens) if self.frozen is not None else stacked
