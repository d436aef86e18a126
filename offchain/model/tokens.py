"""Token ids on the wire, and the tokenizer that turns text into them and back.

Wire format: a micro-batch's ids [micro_batch_size, context] as little-endian uint16 when the
vocabulary fits, else uint32: the data set's shard element type (offchain/data), so a slice of a
shard can travel as it is.

Text: the spec names its tokenizer.json by CID (the byte-level BPE `pm data prepare` trained);
`load_tokenizer` fetches it as a `tokenizers.Tokenizer` (what `PreTrainedTokenizerFast` wraps).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from tokenizers import Tokenizer

from offchain.data.shards import numpy_dtype
from offchain.data.shipped import open_spec_dataset, shipped_dataset
from offchain.data.tokenizer import token_dtype as shard_dtype
from offchain.errors import UserError
from offchain.model.spec import ModelSpec
from offchain.storage.store import Store

BOS_TOKEN, EOS_TOKEN = "<|bos|>", "<|eos|>"  # `pm data prepare` tokenizers' specials


@functools.cache
def token_dtype(vocab_size: int) -> np.dtype:
    return numpy_dtype(shard_dtype(vocab_size))


def encode_tokens(tokens: torch.Tensor, spec: ModelSpec) -> bytes:
    """Token ids [micro_batch_size, context] as wire bytes."""
    return tokens.cpu().numpy().astype(token_dtype(spec.config.vocab_size)).tobytes()


def decode_tokens(data: bytes, spec: ModelSpec) -> torch.Tensor:
    """Inverse of encode_tokens for one micro-batch; refuses a payload of the wrong size or range."""
    dtype = token_dtype(spec.config.vocab_size)
    shape = (spec.micro_batch_size, spec.context)
    expected = shape[0] * shape[1] * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"token payload has {len(data)} bytes, expected {expected} for shape {shape}")
    tokens = torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.int64)).reshape(shape)
    if tokens.max() >= spec.config.vocab_size:
        raise ValueError(f"token ids outside the vocabulary 0..{spec.config.vocab_size - 1}")
    return tokens


def encode_ids(ids: list[int], spec: ModelSpec) -> bytes:
    """A run of token ids (a completion's new positions) in the wire dtype."""
    return np.asarray(ids, dtype=token_dtype(spec.config.vocab_size)).tobytes()


def decode_ids(data: bytes, spec: ModelSpec) -> torch.Tensor:
    """Inverse of encode_ids: a LongTensor [n]; refuses a ragged payload or ids outside the vocabulary."""
    dtype = token_dtype(spec.config.vocab_size)
    if not data or len(data) % dtype.itemsize:
        raise ValueError(f"a token run of {len(data)} bytes is not whole {dtype.itemsize}-byte ids")
    ids = np.frombuffer(data, dtype=dtype)
    if ids.max() >= spec.config.vocab_size:  # checked in numpy: a stage decodes every step's ids
        raise ValueError(f"token ids outside the vocabulary 0..{spec.config.vocab_size - 1}")
    return torch.from_numpy(ids.astype(np.int64))


def load_tokenizer(spec: ModelSpec, store: Store) -> Tokenizer:
    """The spec's tokenizer from `store`, checked against the spec's data set and vocabulary (a
    shipped data set missing from the store is prepared into it first)."""
    open_spec_dataset(store, spec.tokenizer_cid, spec.manifest_cid, spec.config.vocab_size)
    raw = store.get(spec.tokenizer_cid)
    try:
        tokenizer = Tokenizer.from_str(raw.decode())
    except Exception as error:  # noqa: BLE001 - tokenizers raises plain Exception; also bad UTF-8
        raise UserError(f"tokenizer {spec.tokenizer_cid} is not a tokenizer.json: {error}") from None
    spec.check_tokenizer_vocab(tokenizer.get_vocab_size())
    return tokenizer


def shipped_tokenizer(spec: ModelSpec) -> Tokenizer:
    """The tokenizer of the shipped data set a spec names, for code with no store of its own
    (benchmarks, tests): the data set is prepared privately once per process."""
    return load_tokenizer(spec, shipped_dataset(spec.manifest_cid).store)
