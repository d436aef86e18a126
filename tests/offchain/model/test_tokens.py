"""Token ids on the wire and the spec's tokenizer (text <-> ids)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from offchain.errors import UserError
from offchain.model.data import batch_for
from offchain.model.spec import parse_spec
from offchain.model.tokens import byte_tokenizer, decode_tokens, encode_tokens, load_tokenizer, token_dtype

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


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


def test_byte_tokenizer_ids_are_utf8_bytes():
    text = "Héllo wörld\n\tdef train(): ✓"
    tokenizer = byte_tokenizer()
    ids = tokenizer.encode(text).ids
    assert ids == list(text.encode())
    assert tokenizer.decode(ids) == text
    assert tokenizer.get_vocab_size() == 256
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    assert wrapped(text)["input_ids"] == ids


def _bpe(vocab_size: int) -> bytes:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the model trains the stages of the model"] * 20, trainer)
    return tokenizer.to_str().encode()


def test_load_tokenizer_checks_the_vocabulary(tiny_data):
    tiny_data.pop("dataset")
    blob = _bpe(260)
    vocab = Tokenizer.from_str(blob.decode()).get_vocab_size()
    spec = parse_spec(
        {
            **tiny_data,
            "tokenizer_cid": CID,
            "manifest_cid": CID,
            "config": {**tiny_data["config"], "vocab_size": vocab},
        }
    )
    assert load_tokenizer(spec, {CID: blob}.__getitem__).get_vocab_size() == vocab
    other = parse_spec({**tiny_data, "tokenizer_cid": CID, "manifest_cid": CID})
    with pytest.raises(UserError, match=f"config.vocab_size=256 but the tokenizer has {vocab} tokens"):
        load_tokenizer(other, {CID: blob}.__getitem__)
    with pytest.raises(UserError, match=r"is not a tokenizer\.json"):
        load_tokenizer(spec, {CID: b"\x00junk"}.__getitem__)
