"""Token ids on the wire, and the tokenizer that turns text into them and back.

Wire format: a micro-batch's ids [micro_batch_size, context] as little-endian uint16 when the
vocabulary fits, else uint32, the same rule as the dataset's token shards, so a slice of a shard
can travel as it is.

Text: every tokenizer is a `tokenizers.Tokenizer` (what `PreTrainedTokenizerFast` wraps). A spec
with a prepared dataset names its tokenizer.json by CID; a spec on a shipped byte-level corpus uses
`byte_tokenizer()`, a byte-level BPE with no merges whose ids are the UTF-8 bytes themselves.
`load_tokenizer` is the one place that decides which.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from offchain.errors import UserError
from offchain.model.spec import BYTE_VOCAB, ModelSpec

U16_VOCAB = 2**16
BOS_TOKEN, EOS_TOKEN = "<|bos|>", "<|eos|>"  # `pm data prepare` tokenizers' specials


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= U16_VOCAB else np.dtype("<u4")


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
    ids = torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.int64))
    if ids.max() >= spec.config.vocab_size:
        raise ValueError(f"token ids outside the vocabulary 0..{spec.config.vocab_size - 1}")
    return ids


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters, which byte-level BPE vocabularies spell
    their tokens in: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [byte for byte in range(BYTE_VOCAB) if byte not in printable]
    return {
        **{byte: chr(byte) for byte in printable},
        **{byte: chr(BYTE_VOCAB + n) for n, byte in enumerate(others)},
    }


@cache
def _byte_tokenizer_json() -> str:
    spelled = _byte_to_unicode()
    tokenizer = Tokenizer(models.BPE(vocab={spelled[byte]: byte for byte in range(BYTE_VOCAB)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer.to_str()


def byte_tokenizer() -> Tokenizer:
    """Token id = UTF-8 byte: the tokenizer of a shipped byte-level corpus, as a tokenizer.json."""
    return Tokenizer.from_str(_byte_tokenizer_json())


def load_tokenizer(spec: ModelSpec, fetch: Callable[[str], bytes]) -> Tokenizer:
    """The spec's tokenizer: tokenizer.json fetched by its CID (`fetch` = a store's get), checked
    against the spec's vocabulary; the byte tokenizer for a byte-level dataset."""
    if spec.tokenizer_cid is None:
        return byte_tokenizer()
    raw = fetch(spec.tokenizer_cid)
    try:
        tokenizer = Tokenizer.from_str(raw.decode())
    except Exception as error:  # noqa: BLE001 - tokenizers raises plain Exception; also bad UTF-8
        raise UserError(f"tokenizer {spec.tokenizer_cid} is not a tokenizer.json: {error}") from None
    spec.check_tokenizer_vocab(tokenizer.get_vocab_size())
    return tokenizer
