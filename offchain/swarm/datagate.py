"""A stage checks the data a driver sends it before it trains on it.

A driver is authorized on-chain to feed the swarm, not trusted with what it feeds: a verifier
refutes the claim of a stage whose trace holds token ids (or, on the last stage, targets) that
are not the data set's rows for (seed, round, step, micro-batch), whoever sent them. So each
stage applies the verifier's own per-micro-batch rule (offchain.proofs.provenance
`check_micro_batch`) to every training micro-batch first: the source must be the sampler's draw,
and the ids exactly those rows of the manifest's shards. What fails is refused with its reason
(the driver gets it as the call's error), nothing is computed or recorded, and the stage serves on.

Shards come from the worker's store by CID, once: the data set keeps every shard it has read, so
a check costs a hash per row, a slice and a compare (figures in docs/architecture.md).
"""

from __future__ import annotations

from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.data.sampler import Source
from offchain.model.data import spec_dataset
from offchain.model.records import MessageHeader
from offchain.model.spec import ModelSpec
from offchain.proofs.provenance import Batching, NotTheData, check_micro_batch
from offchain.storage.errors import StorageError


class DataGate:
    """Checks a stage's training micro-batches against `dataset`, the spec's data set (None: the
    shipped one the spec names, prepared privately on first use: in-process tests)."""

    def __init__(self, spec: ModelSpec, dataset: Dataset | None) -> None:
        self.spec, self._dataset = spec, dataset
        self.batching = Batching.of(spec)

    def check(
        self, header: MessageHeader, source: Source | None, tokens: bytes, targets: bytes | None
    ) -> None:
        """NotTheData (a ValueError, with the micro-batch and the reason) unless `tokens` (and
        `targets`, on the last stage) are the data set's rows for the micro-batch `header` names and
        `source` is where they are; ValueError when the data set cannot be read (never train on
        data that could not be checked)."""
        at = (header.round, header.step, header.micro_batch)
        where = f"round {at[0]} step {at[1]} micro-batch {at[2]}"
        try:
            dataset = self._dataset = spec_dataset(self.spec, self._dataset)
            decoded = None if targets is None else self.batching.decode(targets)
            check_micro_batch(dataset, self.batching, at, source, self.batching.decode(tokens), decoded)
        except NotTheData as refused:
            raise NotTheData(f"{where}: {refused.reason}", refused.expected, refused.actual) from None
        except (DatasetError, StorageError) as error:
            raise ValueError(f"{where}: cannot read the data set to check it: {error}") from None
