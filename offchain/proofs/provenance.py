"""Data provenance: the token ids a stage trained on are rows of the data set its spec names.

With a prepared data set (the spec's `manifest_cid`), every micro-batch record that has token
ids names their `source`: (shard, offset) per row of the train split. A verifier checks, step by
step, that the source is the sampler's draw for (seed, round, step, micro-batch) (the driver has
no say in which rows) and that the recorded token ids, and on the last stage the targets, are
exactly those rows of the manifest's shards, fetched by CID. So a driver that fed a stage
anything else, or a worker that trained on anything else, is refuted at the first step where it
happened; only the shards that the checked rows name are fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from offchain.data.dataset import Dataset
from offchain.data.sampler import rows_at, sample_source
from offchain.model.records import MicroBatchRecord, StepRecord, Trace


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


class _Mismatch(Exception):
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
                _check_micro_batch(trace, record, micro, dataset, batching, targets)
            except _Mismatch as mismatch:
                where = f"micro-batch {micro.index}: "
                return DataMismatch(index, where + mismatch.reason, mismatch.expected, mismatch.actual)
    return None


def _check_micro_batch(
    trace: Trace,
    record: StepRecord,
    micro: MicroBatchRecord,
    dataset: Dataset,
    batching: Batching,
    targets: bool,
) -> None:
    key = (batching.seed, record.round, record.step, micro.index, batching.rows, batching.context)
    source = sample_source(dataset.manifest, dataset.cid, *key)
    if micro.source != source:
        raise _Mismatch("its rows are not the data set's draw for this step", source, micro.source)
    rows = rows_at(dataset, "train", source, batching.context)
    _compare("token ids", _ids(trace, micro, "tokens", batching), rows.tokens)
    if targets:
        _compare("targets", _ids(trace, micro, "targets", batching), rows.targets)


def _ids(trace: Trace, micro: MicroBatchRecord, name: str, batching: Batching) -> np.ndarray:
    digest = micro.inputs.get(name)
    if digest is None or digest not in trace.payloads:
        raise _Mismatch(f"its {name} are missing from the trace", None, digest)
    try:
        return batching.decode(trace.payloads[digest])
    except ValueError as error:
        raise _Mismatch(f"its {name} are not token ids of this spec ({error})") from None


def _compare(what: str, recorded: np.ndarray, expected: np.ndarray) -> None:
    if recorded.shape != expected.shape or not np.array_equal(recorded, expected):
        differ = np.argwhere(recorded != expected) if recorded.shape == expected.shape else None
        at = f" (first at row {differ[0][0]}, position {differ[0][1]})" if differ is not None else ""
        raise _Mismatch(f"its {what} are not the data set's rows{at}", _digest(expected), _digest(recorded))


def _digest(ids: np.ndarray) -> str:
    """A short name for an id array in a verdict: its shape and the sha256 of its int64 bytes."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()
    return f"{list(ids.shape)}:{digest[:16]}"
