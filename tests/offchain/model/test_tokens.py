"""Token ids on the wire and the spec's tokenizer (text <-> ids)."""

import pytest
import torch

from offchain.data.errors import DatasetError
from offchain.errors import UserError
from offchain.model.data import batch_for
from offchain.model.spec import parse_spec
from offchain.model.tokens import decode_tokens, encode_tokens, load_tokenizer, token_dtype
from offchain.storage.embedded import EmbeddedStore


def test_token_wire_format(tiny):
    tokens, _ = batch_for(tiny, 0, 0, 0)
    data = encode_tokens(tokens, tiny)
    assert len(data) == 2 * tokens.numel()
    assert torch.equal(decode_tokens(data, tiny), tokens)
    with pytest.raises(ValueError, match="expected"):
        decode_tokens(data[:-1], tiny)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decode_tokens(b"\xff\xff" + data[2:], tiny)
    assert token_dtype(2**16) == "<u2"
    assert token_dtype(2**16 + 1) == "<u4"


def test_load_tokenizer_from_the_store_checks_the_vocabulary(tiny, tiny_data, tmp_path):
    store = EmbeddedStore(tmp_path / "store", fsync=False)  # empty: the shipped data set is prepared into it
    tokenizer = load_tokenizer(tiny, store)
    assert tokenizer.get_vocab_size() == tiny.config.vocab_size == 512
    text = "def train(model):\n    return model"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert len(tokenizer.encode(text).ids) < len(text.encode())  # BPE merges, not bytes
    with pytest.raises(UserError, match=r"config\.vocab_size=513, the tokenizer has 512 tokens"):
        tiny.model_copy(
            update={"config": tiny.config.model_copy(update={"vocab_size": 513})}
        ).check_tokenizer_vocab(512)
    wrong = parse_spec({**tiny_data, "config": {**tiny_data["config"], "vocab_size": 500}})
    with pytest.raises(DatasetError, match="the spec's vocab_size 500 is not the tokenizer's 512"):
        load_tokenizer(wrong, store)
