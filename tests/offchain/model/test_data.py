"""A spec's batches as tensors: drawn from the data set it names, reproducible, targets shifted."""

import pytest
import torch

from offchain.data.shipped import shipped_dataset
from offchain.model.data import batch_for, micro_batch, spec_dataset, validation_batches
from offchain.model.spec import load_spec
from tests.offchain.model.conftest import SPECS


def test_batches_are_the_data_sets_rows_deterministic_and_shifted(tiny):
    tokens, targets = batch_for(tiny, 3, 2, 1)
    again, _, source = micro_batch(tiny, shipped_dataset(tiny.manifest_cid), 3, 2, 1)
    other, _ = batch_for(tiny, 3, 2, 0)
    assert tokens.shape == (tiny.micro_batch_size, tiny.context) and tokens.dtype == torch.int64
    assert torch.equal(tokens, again)
    assert not torch.equal(tokens, other)
    assert torch.equal(tokens[:, 1:], targets[:, :-1])
    assert len(source) == tiny.micro_batch_size
    assert int(tokens.max()) < tiny.config.vocab_size


def test_validation_batches_and_a_foreign_data_set(tiny):
    batches = validation_batches(tiny, 3)
    assert len(batches) == 3 and batches[0][0].shape == (tiny.micro_batch_size, tiny.context)
    small = load_spec(SPECS / "small.json")
    with pytest.raises(ValueError, match=f"trains on data set {tiny.manifest_cid}, not {small.manifest_cid}"):
        spec_dataset(tiny, shipped_dataset(small.manifest_cid))
