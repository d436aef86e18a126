"""A spec's training and validation batches as tensors, drawn from its prepared data set.

A training batch is a pure function of the data set and (spec seed, round, step, micro-batch)
(offchain/data/sampler.py), so the driver, the single-process reference and a verifier recompute
the same token ids. `dataset=None` means the shipped data set the spec names, prepared once per
process into a private store (offchain/data/shipped.py): what tests and benchmarks train on."""

from __future__ import annotations

import torch

from offchain.data.dataset import Dataset
from offchain.data.sampler import Batch, Source, train_batch
from offchain.data.sampler import validation_batches as validation_rows
from offchain.data.shipped import shipped_dataset
from offchain.model.spec import ModelSpec


def spec_dataset(spec: ModelSpec, dataset: Dataset | None) -> Dataset:
    """`dataset`, which must be the one the spec names, or the spec's shipped data set."""
    if dataset is None:
        return shipped_dataset(spec.manifest_cid)
    if dataset.cid != spec.manifest_cid:
        raise ValueError(f"spec {spec.name!r} trains on data set {spec.manifest_cid}, not {dataset.cid}")
    return dataset


def _tensors(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(batch.tokens), torch.from_numpy(batch.targets)


def micro_batch(
    spec: ModelSpec, dataset: Dataset | None, round: int, step: int, micro_batch: int
) -> tuple[torch.Tensor, torch.Tensor, Source]:
    """(tokens, targets, source) of a training micro-batch: LongTensors [micro_batch_size, context]
    and where each row starts in the data set (what the trace records)."""
    rows = train_batch(
        spec_dataset(spec, dataset), spec.seed, round, step, micro_batch, spec.micro_batch_size, spec.context
    )
    return *_tensors(rows), rows.source


def batch_for(
    spec: ModelSpec, round: int, step: int, mb: int, dataset: Dataset | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, targets) of training micro-batch `mb`."""
    tokens, targets, _ = micro_batch(spec, dataset, round, step, mb)
    return tokens, targets


def validation_batches(
    spec: ModelSpec, count: int, dataset: Dataset | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of held-out batches (the same for every codec and every run)."""
    rows = validation_rows(spec_dataset(spec, dataset), spec.micro_batch_size, spec.context, count)
    return [_tensors(batch) for batch in rows]
