"""Batches drawn from a stored data set: recomputable anywhere, and only from the data set."""

import hashlib
from collections import Counter

import numpy as np
import pytest

from offchain.data.dataset import Dataset
from offchain.data.errors import DatasetError
from offchain.data.sampler import rows_at, sample_source, train_batch, validation_batches
from offchain.data.shipped import open_dataset, shipped_by_name
from offchain.storage.embedded import EmbeddedStore


def test_rows_are_drawn_by_a_hash_of_seed_round_step_micro_batch_row(tiny_dataset):
    """Pinned values: a change to the draw would change every batch a verifier recomputes."""
    manifest, cid = tiny_dataset.manifest, tiny_dataset.cid
    assert sample_source(manifest, cid, 1234, 0, 0, 0, 4, 64) == (
        (1, 37456),
        (0, 23349),
        (2, 29882),
        (2, 59526),
    )
    # row 0 by hand: u mod (row starts of all shards) lands in shard 1, after shard 0's starts
    key = b"".join(n.to_bytes(8, "big") for n in (1234, 0, 0, 0, 0))
    u = int.from_bytes(hashlib.sha256(b"pm/data/sample/v1" + key).digest()[:16], "big")
    starts = [shard.tokens - 64 for shard in manifest.splits["train"].shards]
    assert u % sum(starts) == starts[0] + 37456
    assert sample_source(manifest, cid, 1234, 0, 0, 0, 4, 64) == sample_source(
        manifest, cid, 1234, 0, 0, 0, 4, 64
    )
    keys = [(1234, 0, 0, 1), (1234, 0, 1, 0), (1234, 1, 0, 0), (1235, 0, 0, 0)]
    assert len({sample_source(manifest, cid, *key, 4, 64) for key in keys}) == len(keys)
    shards = Counter(s for step in range(50) for s, _ in sample_source(manifest, cid, 1, 0, step, 0, 8, 64))
    assert set(shards) == {0, 1, 2}


def test_a_batch_is_consecutive_ids_of_its_shards_and_targets_are_shifted_by_one(tiny_dataset):
    batch = train_batch(tiny_dataset, 1234, 3, 2, 1, rows=2, context=8)
    assert batch.source == ((2, 49494), (2, 63712))
    assert batch.tokens.dtype == np.int64 and batch.tokens.shape == batch.targets.shape == (2, 8)
    shard = tiny_dataset.shard("train", 2)
    for row, (_, offset) in enumerate(batch.source):
        assert batch.tokens[row].tolist() == shard[offset : offset + 8].tolist()
        assert batch.targets[row].tolist() == shard[offset + 1 : offset + 9].tolist()
    again = rows_at(tiny_dataset, "train", batch.source, 8)
    assert np.array_equal(again.tokens, batch.tokens) and np.array_equal(again.targets, batch.targets)


def test_rows_outside_a_shard_and_contexts_no_shard_holds_are_refused(tiny_dataset):
    with pytest.raises(
        DatasetError, match=r"^row at offset 64340 of train shard 2 does not fit: the shard holds"
    ):
        rows_at(tiny_dataset, "train", ((2, 64340),), 64)
    with pytest.raises(DatasetError, match=r"^data set .* has no train shard 3 \(it has 3\)$"):
        rows_at(tiny_dataset, "train", ((3, 0),), 64)
    with pytest.raises(
        DatasetError, match=r"^no train shard of data set .* holds a row of context 65536 \+ 1 ids"
    ):
        train_batch(tiny_dataset, 0, 0, 0, 0, 1, 65536)


def test_validation_batches_are_fixed_non_overlapping_held_out_rows(tiny_dataset):
    batches = validation_batches(tiny_dataset, rows=4, context=64, count=3)
    starts = [start for batch in batches for start in batch.source]
    assert starts == [(0, 65 * i) for i in range(12)]
    held_out = tiny_dataset.shard("validation", 0)
    assert batches[2].tokens[3].tolist() == held_out[65 * 11 : 65 * 11 + 64].tolist()
    with pytest.raises(
        DatasetError, match="holds 334 rows of context 64 \\+ 1 ids, fewer than 100 batches x 4 rows"
    ):
        validation_batches(tiny_dataset, rows=4, context=64, count=100)


def test_a_dataset_is_checked_against_the_spec_that_names_it(tiny_dataset):
    tokenizer = tiny_dataset.manifest.tokenizer.cid
    tiny_dataset.check_spec(tokenizer, 512)
    with pytest.raises(DatasetError, match=r"^the spec's vocab_size 256 is not the tokenizer's 512"):
        tiny_dataset.check_spec(tokenizer, 256)
    other = shipped_by_name("small").tokenizer_cid
    with pytest.raises(DatasetError, match=f"^the spec's tokenizer {other} is not the data set's"):
        tiny_dataset.check_spec(other, 512)


def test_open_dataset_prepares_a_shipped_data_set_and_refuses_unknown_or_malformed_ones(tmp_path, tiny_store):
    store = EmbeddedStore(tmp_path / "store", fsync=False)
    tiny = shipped_by_name("tiny")
    dataset = open_dataset(store, tiny.manifest_cid)  # not in the store: prepared from the shipped corpus
    assert dataset.manifest == Dataset(tiny_store[0], tiny.manifest_cid).manifest
    assert tiny.manifest_cid in store.pins()
    stranger = store.put(b"not a manifest")
    with pytest.raises(
        DatasetError, match=f"^manifest {stranger} is not a dataset manifest: manifest: Invalid JSON"
    ):
        open_dataset(store, stranger)
    unknown = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
    with pytest.raises(DatasetError, match=f"^data set {unknown} is not in the store"):
        open_dataset(store, unknown)
