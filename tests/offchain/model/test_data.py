"""The shipped corpus is real text, checked against the spec digest; batches are reproducible."""

import pytest
import torch

from offchain.errors import UserError
from offchain.model.data import batch_for, corpus_tokens, split, validation_batches
from offchain.model.spec import parse_spec


def test_corpus_is_english_text_with_its_digest(tiny):
    text = bytes(corpus_tokens(tiny.dataset).to(torch.uint8).tolist())
    assert len(text) > 400_000
    assert b'The "assert" statement' in text


def test_wrong_digest_is_refused(tiny_data):
    tiny_data["dataset"]["sha256"] = "0" * 64
    with pytest.raises(UserError, match="the spec expects 0000"):
        corpus_tokens(parse_spec(tiny_data).dataset)


def test_batches_are_deterministic_and_shifted(tiny):
    tokens, targets = batch_for(tiny, 3, 2, 1)
    again, _ = batch_for(tiny, 3, 2, 1)
    other, _ = batch_for(tiny, 3, 2, 0)
    assert tokens.shape == (tiny.micro_batch_size, tiny.context)
    assert torch.equal(tokens, again)
    assert not torch.equal(tokens, other)
    assert torch.equal(tokens[:, 1:], targets[:, :-1])


def test_validation_is_held_out(tiny):
    train, val = split(tiny, "train"), split(tiny, "val")
    assert len(train) + len(val) == len(corpus_tokens(tiny.dataset))
    assert len(validation_batches(tiny, 3)) == 3
