"""A prepared data set read back from a store by its manifest CID: what drivers, workers,
verifiers and benchmarks train and check against.

Every byte comes through the store, verified against its CID, so a data set is exactly the one
its CID names wherever it is opened. Shards are fetched on first use and kept (a verifier that
checks a few micro-batches fetches only the shards they name).
"""

from __future__ import annotations

import numpy as np

from offchain.data.errors import DatasetError
from offchain.data.manifest import Manifest, Split, parse_manifest
from offchain.data.shards import read_shard
from offchain.data.tokenizer import BpeTokenizer
from offchain.storage.store import Store


class Dataset:
    """The manifest at `manifest_cid` in `store`, and its shards on demand."""

    def __init__(self, store: Store, manifest_cid: str) -> None:
        self.store, self.cid = store, manifest_cid
        self.manifest: Manifest = parse_manifest(store.get(manifest_cid), f"manifest {manifest_cid}")
        self._shards: dict[tuple[Split, int], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Dataset({self.cid})"

    def shard(self, split: Split, index: int) -> np.ndarray:
        """Shard `index` of `split` as a read-only array of ids."""
        key = (split, index)
        if key not in self._shards:
            shards = self.manifest.splits[split].shards
            if not 0 <= index < len(shards):
                raise DatasetError(f"data set {self.cid} has no {split} shard {index} (it has {len(shards)})")
            info = shards[index]
            try:
                self._shards[key] = read_shard(
                    self.store.get(info.cid), self.manifest.dtype, info.tokens, info.cid
                )
            except ValueError as error:
                raise DatasetError(f"data set {self.cid}: {error}") from None
        return self._shards[key]

    def load(self, split: Split) -> int:
        """Fetch every shard of `split` now (they are kept); its token count. For a stage worker, which
        checks every micro-batch it trains on against the data set: a store that becomes unreachable
        mid-training (a Kubo daemon restarting) cannot then stall its rounds."""
        shards = self.manifest.splits[split].shards
        return sum(len(self.shard(split, index)) for index in range(len(shards)))

    def tokenizer(self) -> BpeTokenizer:
        return BpeTokenizer(self.store.get(self.manifest.tokenizer.cid))

    def check_spec(self, tokenizer_cid: str, vocab_size: int) -> None:
        """A spec that names this data set must name its tokenizer and vocabulary size too."""
        info = self.manifest.tokenizer
        if tokenizer_cid != info.cid:
            raise DatasetError(
                f"the spec's tokenizer {tokenizer_cid} is not the data set's "
                f"({info.cid}, manifest {self.cid})"
            )
        if vocab_size != info.vocab_size:
            raise DatasetError(
                f"the spec's vocab_size {vocab_size} is not the tokenizer's {info.vocab_size} "
                f"(manifest {self.cid})"
            )
