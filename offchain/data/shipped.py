"""The corpus this repository ships and the data sets its specs name, prepared on demand.

data/pydoc-topics-3.11.7.txt.xz (PSF license, see data/README.md) is prepared with fixed options
into one data set per shipped spec. Preparing is deterministic, so a store that lacks one of
these data sets gets it by preparing the shipped corpus again: the result is checked against the
CID the spec names, exactly as a fetch from IPFS would be.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.data.prepare import Prepared, PrepareOptions, prepare
from offchain.paths import REPO
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.store import Store

CORPUS = REPO / "data" / "pydoc-topics-3.11.7.txt.xz"


@dataclass(frozen=True)
class ShippedDataset:
    """One spec's data set: the options it is prepared with and the CIDs that must come out."""

    name: str
    options: PrepareOptions
    manifest_cid: str
    tokenizer_cid: str

    def command(self, out: Path, store: Path) -> list[str]:
        """The `pm data prepare` arguments that build it (what `pm demo` echoes and runs)."""
        o = self.options
        return [
            "data",
            "prepare",
            "--input",
            str(CORPUS.relative_to(Path.cwd()) if CORPUS.is_relative_to(Path.cwd()) else CORPUS),
            "--vocab-size",
            str(o.vocab_size),
            "--shard-tokens",
            str(o.shard_tokens),
            "--context",
            str(o.context),
            "--batch-size",
            str(o.batch_size),
            "--out",
            str(out),
            "--store",
            str(store),
            "--json",
        ]


SHIPPED = {
    shipped.manifest_cid: shipped
    for shipped in (
        ShippedDataset(
            "tiny",
            PrepareOptions(vocab_size=512, shard_tokens=65536, context=64, batch_size=8),
            manifest_cid="QmVXchr8Mj5LQuY5AoRsYYCrUGcf2eeW2b6ZHzxdc5mpYR",
            tokenizer_cid="QmeB8ALKZ1KjzQ6yNF6GoXFvdTdX47BWfi74qrUYEWAXNu",
        ),
        ShippedDataset(
            "small",
            PrepareOptions(vocab_size=4096, shard_tokens=65536, context=256, batch_size=4),
            manifest_cid="QmUVQhevomDyibuG1cFqK2QhMGRbP5XesYxKA7d6ndMXXD",
            tokenizer_cid="QmXBwLgpSuisCUnvmx1DNTTHoVSi5fbaGpAXohhWxorYG6",
        ),
    )
}


def shipped_by_name(name: str) -> ShippedDataset:
    return next(shipped for shipped in SHIPPED.values() if shipped.name == name)


def prepare_shipped(shipped: ShippedDataset, store: Store, out: Path) -> Prepared:
    """Prepare a shipped data set into `store` (and `out`); DatasetError if the CIDs differ."""
    prepared = prepare([CORPUS], shipped.options, out, store)
    if prepared.manifest_cid != shipped.manifest_cid:
        raise DatasetError(
            f"preparing the shipped corpus gave manifest {prepared.manifest_cid}, not {shipped.manifest_cid} "
            f"({shipped.name}): the corpus file, tokenizers version or prepare code changed"
        )
    return prepared


def open_dataset(store: Store, manifest_cid: str) -> Dataset:
    """The data set at `manifest_cid`; a shipped one missing from `store` is prepared into it."""
    if not store.has(manifest_cid):
        shipped = SHIPPED.get(manifest_cid)
        if shipped is None:
            raise DatasetError(
                f"data set {manifest_cid} is not in the store: import it (pm store import, or an IPFS "
                "daemon via --ipfs-api) or prepare it with pm data prepare"
            )
        with tempfile.TemporaryDirectory(prefix="pm-shipped-") as scratch:
            prepare_shipped(shipped, store, Path(scratch) / "out")
    return Dataset(store, manifest_cid)


_SCRATCH: list[tempfile.TemporaryDirectory] = []  # private stores, removed at interpreter exit


@cache
def shipped_dataset(manifest_cid: str) -> Dataset:
    """A shipped data set prepared into a private temporary store, once per process: for code that
    trains or evaluates without a store of its own (the single-process reference, tests, benchmarks)."""
    scratch = tempfile.TemporaryDirectory(prefix="pm-shipped-")
    _SCRATCH.append(scratch)
    return open_dataset(EmbeddedStore(Path(scratch.name) / "store", fsync=False), manifest_cid)


def open_spec_dataset(store: Store, tokenizer_cid: str, manifest_cid: str, vocab_size: int) -> Dataset:
    """The data set a spec names (`open_dataset`), checked against the spec's tokenizer and vocabulary."""
    dataset = open_dataset(store, manifest_cid)
    dataset.check_spec(tokenizer_cid, vocab_size)
    return dataset
