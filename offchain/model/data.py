"""The shipped byte-level text corpus, and batches that any party can recompute from it.

Every batch is a pure function of (spec seed, round, step, micro-batch), so the driver, every
stage worker and a verifier replaying a round see the same token ids without exchanging data."""

from __future__ import annotations

import hashlib
import lzma
from functools import cache
from pathlib import Path

import torch

from offchain.data.dataset import Dataset
from offchain.data.sampler import Source, train_batch
from offchain.errors import UserError
from offchain.model.spec import DatasetSpec, ModelSpec

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
VALIDATION_FRACTION = 0.1


@cache
def _load_corpus(name: str, sha256: str) -> bytes:
    path = DATA_DIR / f"{name}.txt.xz"
    if not path.is_file():
        raise UserError(f"dataset {name!r} not found (expected {path})")
    text = lzma.decompress(path.read_bytes())
    actual = hashlib.sha256(text).hexdigest()
    if actual != sha256:
        raise UserError(f"dataset {name!r} has sha256 {actual}, the spec expects {sha256}")
    return text


def corpus_tokens(dataset: DatasetSpec) -> torch.Tensor:
    """The whole corpus as byte tokens (uint8: windows widen only what they cut, so a verifier that
    regenerates every batch does not copy the corpus to int64 each time), digest checked."""
    return torch.frombuffer(bytearray(_load_corpus(dataset.name, dataset.sha256)), dtype=torch.uint8)


def split(spec: ModelSpec, part: str) -> torch.Tensor:
    """'train' = the first 90% of the corpus, 'val' = the held-out last 10%."""
    if spec.dataset is None:
        raise UserError(
            f"spec {spec.name!r} names a prepared dataset ({spec.manifest_cid}), not a shipped corpus"
        )
    tokens = corpus_tokens(spec.dataset)
    cut = int(len(tokens) * (1 - VALIDATION_FRACTION))
    return tokens[:cut] if part == "train" else tokens[cut:]


def _generator(*key: int) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(":".join(map(str, key)).encode()).digest()[:8], "big") >> 1
    return torch.Generator().manual_seed(seed)


def _windows(
    data: torch.Tensor, spec: ModelSpec, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(data) - spec.context - 1, (spec.micro_batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(spec.context + 1)[None, :]
    window = data[index].long()
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def batch_for(spec: ModelSpec, round: int, step: int, micro_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, targets), LongTensors [micro_batch_size, context], from the training split."""
    return _windows(split(spec, "train"), spec, _generator(spec.seed, round, step, micro_batch))


def micro_batch(
    spec: ModelSpec, dataset: Dataset | None, round: int, step: int, micro_batch: int
) -> tuple[torch.Tensor, torch.Tensor, Source | None]:
    """(tokens, targets, source) of a training micro-batch: rows of the spec's prepared data set
    and where they start (`dataset` opened from its `manifest_cid`), else the shipped corpus."""
    if spec.manifest_cid is None:
        return *batch_for(spec, round, step, micro_batch), None
    if dataset is None or dataset.cid != spec.manifest_cid:
        raise ValueError(f"spec {spec.name!r} trains on data set {spec.manifest_cid}: open it first")
    rows = train_batch(dataset, spec.seed, round, step, micro_batch, spec.micro_batch_size, spec.context)
    return torch.from_numpy(rows.tokens), torch.from_numpy(rows.targets), rows.source


def validation_batches(spec: ModelSpec, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of held-out batches (same for every codec and every run of a spec seed)."""
    data = split(spec, "val")
    return [_windows(data, spec, _generator(spec.seed, -1, index)) for index in range(count)]
