"""Batches anyone can recompute: rows drawn from a data set by (seed, round, step, micro-batch).

A row is `context + 1` consecutive ids of one shard (a row never spans two shards): the tokens
are its first `context` ids, the targets its last `context`. Row r of micro-batch m of step s of
round t is the (u mod W)-th of the train split's W row starts, counted shard by shard, where

    u = int.from_bytes(sha256(b"pm/data/sample/v1" | seed | t | s | m | r)[:16], "big")

(each number 8 bytes big-endian). The draw is the same on every machine with no RNG library in
the way, and needs only the manifest: a verifier checks a recorded `source` (shard, offset per
row) without fetching any shard, then fetches only the shards it names to check the ids.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import struct
from dataclasses import dataclass

import numpy as np

from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.data.manifest import Manifest, Split

_DOMAIN = b"pm/data/sample/v1"
_KEY = struct.Struct(">QQQQQ")

Source = tuple[tuple[int, int], ...]
"""Where a batch's rows come from: (shard index within the split, offset in ids) per row."""


@dataclass(frozen=True)
class Batch:
    """`tokens` and `targets`: int64 arrays [rows, context]; `source`: where each row starts."""

    tokens: np.ndarray
    targets: np.ndarray
    source: Source


def _row_starts(manifest: Manifest, split: Split, context: int, cid: str) -> list[int]:
    """Cumulative count of row starts per shard of `split`."""
    if context < 1:
        raise ValueError(f"context must be at least 1, not {context}")
    counts = [max(shard.tokens - context, 0) for shard in manifest.splits[split].shards]
    if not any(counts):
        raise DatasetError(
            f"no {split} shard of data set {cid} holds a row of context {context} + 1 ids "
            f"(its shards hold {manifest.shard_tokens} ids at most)"
        )
    return list(itertools.accumulate(counts))


def sample_source(
    manifest: Manifest, cid: str, seed: int, round: int, step: int, micro_batch: int, rows: int, context: int
) -> Source:
    """The (shard, offset) of every row of a training micro-batch."""
    cumulative = _row_starts(manifest, "train", context, cid)
    total = cumulative[-1]
    source = []
    for row in range(rows):
        digest = hashlib.sha256(_DOMAIN + _KEY.pack(seed, round, step, micro_batch, row)).digest()
        start = int.from_bytes(digest[:16], "big") % total
        shard = bisect.bisect_right(cumulative, start)
        source.append((shard, start - (cumulative[shard - 1] if shard else 0)))
    return tuple(source)


def rows_at(dataset: Dataset, split: Split, source: Source, context: int) -> Batch:
    """The batch whose rows start at `source`; DatasetError when a row does not fit its shard."""
    windows = []
    for shard, offset in source:
        ids = dataset.shard(split, shard)
        if not 0 <= offset <= len(ids) - context - 1:
            raise DatasetError(
                f"row at offset {offset} of {split} shard {shard} does not fit: "
                f"the shard holds {len(ids)} ids"
            )
        windows.append(ids[offset : offset + context + 1])
    rows = np.stack(windows).astype(np.int64)
    return Batch(np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:]), source)


def train_batch(
    dataset: Dataset, seed: int, round: int, step: int, micro_batch: int, rows: int, context: int
) -> Batch:
    """Micro-batch `micro_batch` of step `step` of round `round`: what the driver sends."""
    source = sample_source(dataset.manifest, dataset.cid, seed, round, step, micro_batch, rows, context)
    return rows_at(dataset, "train", source, context)


def validation_batches(dataset: Dataset, rows: int, context: int, count: int) -> list[Batch]:
    """`count` fixed batches of held-out rows: consecutive, non-overlapping rows of the validation
    shards in order (the same for every run, codec and machine)."""
    starts = [
        (shard, offset)
        for shard, info in enumerate(dataset.manifest.splits["validation"].shards)
        for offset in range(0, info.tokens - context, context + 1)
    ]
    if len(starts) < rows * count:
        raise DatasetError(
            f"the validation split of {dataset.cid} holds {len(starts)} rows of context {context} + 1 ids, "
            f"fewer than {count} batches x {rows} rows"
        )
    return [
        rows_at(dataset, "validation", tuple(starts[b * rows : (b + 1) * rows]), context)
        for b in range(count)
    ]
