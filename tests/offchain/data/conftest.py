"""A shipped data set prepared once per session into one store, for the tests that only read it."""

from pathlib import Path

import pytest

from offchain.data.dataset import Dataset
from offchain.data.shipped import prepare_shipped, shipped_by_name
from offchain.storage.embedded import EmbeddedStore

TINY = shipped_by_name("tiny")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> tuple[EmbeddedStore, Path]:
    """The store holding the tiny spec's data set, and the folder `pm data prepare` wrote."""
    root = tmp_path_factory.mktemp("tiny-data")
    store = EmbeddedStore(root / "store", fsync=False)
    prepare_shipped(TINY, store, root / "out")
    return store, root / "out"


@pytest.fixture(scope="session")
def tiny_dataset(tiny_store) -> Dataset:
    return Dataset(tiny_store[0], TINY.manifest_cid)
