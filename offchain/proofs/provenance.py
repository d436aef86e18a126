"""Data provenance: the token ids a stage trained on are rows of the data set its spec names.

With a prepared data set (the spec's `manifest_cid`), every micro-batch record that has token
ids names their `source`: (shard, offset) per row of the train split. A verifier checks, step by
step, that the source is the sampler's draw for (seed, round, step, micro-batch) (the driver has
no say in which rows) and that the recorded token ids, and on the last stage the targets, are
exactly those rows of the manifest's shards, fetched by CID. A worker that trained on anything
else is refuted at the first step where it happened; only the shards that the checked rows name
are fetched. Stage workers apply the same per-micro-batch rule (`check_micro_batch`) to what a
driver sends them before they compute it (offchain/swarm/datagate.py), so a driver that feeds a
stage anything else is refused there and cannot get an honest worker refuted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from offchain.data.dataset import Dataset
from offchain.data.sampler import Source, rows_at, sample_source
from offchain.model.records import MicroBatchRecord, Trace
from offchain.model.spec import ModelSpec
from offchain.model.tokens import decode_tokens


@dataclass(frozen=True)
class DataMismatch:
    """The first step whose data is not the data set's: `expected` is the data set's, `actual` the trace's."""

    step: int
    reason: str
    expected: str | None = None
    actual: str | None = None


@dataclass(frozen=True)
class Batching:
    """How a spec cuts micro-batches from its data set, and how token ids travel on the wire."""

    seed: int
    rows: int
    context: int
    decode: Callable[[bytes], np.ndarray]  # wire bytes -> ids [rows, context] (raises ValueError)

    @classmethod
    def of(cls, spec: ModelSpec) -> Batching:
        """A spec's batching: its seed, micro-batch shape and wire token format."""
        return cls(
            spec.seed, spec.micro_batch_size, spec.context, lambda data: decode_tokens(data, spec).numpy()
        )


class NotTheData(ValueError):
    """A micro-batch that is not the data set's rows for its (round, step, micro-batch): `reason` says
    how, `expected` and `actual` name the two sides (a source, or an id array's shape and digest)."""

    def __init__(self, reason: str, expected: object = None, actual: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = None if expected is None else str(expected)
        self.actual = None if actual is None else str(actual)


def check_data(trace: Trace, dataset: Dataset, batching: Batching, *, targets: bool) -> DataMismatch | None:
    """The first step of `trace` whose token ids (and targets, with `targets`: the last stage) are
    not the data set's rows for that step, or None when every step's are. A data set that cannot
    be read (StorageError, DatasetError) is the data set's fault, not the trace's: it propagates."""
    for index, record in enumerate(trace.records):
        for micro in record.micro_batches:
            try:
                check_micro_batch(
                    dataset,
                    batching,
                    (record.round, record.step, micro.index),
                    micro.source,
                    _ids(trace, micro, "tokens", batching),
                    _ids(trace, micro, "targets", batching) if targets else None,
                )
            except NotTheData as mismatch:
                where = f"micro-batch {micro.index}: "
                return DataMismatch(index, where + mismatch.reason, mismatch.expected, mismatch.actual)
    return None


def check_micro_batch(
    dataset: Dataset,
    batching: Batching,
    at: tuple[int, int, int],
    source: Source | None,
    tokens: np.ndarray,
    targets: np.ndarray | None = None,
) -> None:
    """Raise NotTheData unless `source` is the sampler's draw for `at` = (round, step, micro-batch)
    and `tokens` (and `targets`, when given) are exactly those rows of the data set's shards.

    The one rule both sides apply: a verifier to every micro-batch of a trace (check_data), a stage
    worker to every training micro-batch a driver sends it, before it computes or records anything
    (so a driver's lie is refused where it is told, instead of getting the honest worker refuted).
    Shards are fetched on first use and kept by `dataset`; DatasetError/StorageError propagate."""
    shape = (batching.rows, batching.context)
    drawn = sample_source(dataset.manifest, dataset.cid, batching.seed, *at, *shape)
    if source != drawn:
        raise NotTheData("its rows are not the data set's draw for this step", drawn, source)
    rows = rows_at(dataset, "train", drawn, batching.context)
    _compare("token ids", tokens, rows.tokens)
    if targets is not None:
        _compare("targets", targets, rows.targets)


def _ids(trace: Trace, micro: MicroBatchRecord, name: str, batching: Batching) -> np.ndarray:
    digest = micro.inputs.get(name)
    if digest is None or digest not in trace.payloads:
        raise NotTheData(f"its {name} are missing from the trace", None, digest)
    try:
        return batching.decode(trace.payloads[digest])
    except ValueError as error:
        raise NotTheData(f"its {name} are not token ids of this spec ({error})") from None


def _compare(what: str, recorded: np.ndarray, expected: np.ndarray) -> None:
    if recorded.shape != expected.shape or not np.array_equal(recorded, expected):
        differ = np.argwhere(recorded != expected) if recorded.shape == expected.shape else None
        at = f" (first at row {differ[0][0]}, position {differ[0][1]})" if differ is not None else ""
        raise NotTheData(f"its {what} are not the data set's rows{at}", _digest(expected), _digest(recorded))


def _digest(ids: np.ndarray) -> str:
    """A short name for an id array in a verdict: its shape and the sha256 of its int64 bytes."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()
    return f"{list(ids.shape)}:{digest[:16]}"
