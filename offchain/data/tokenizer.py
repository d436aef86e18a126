"""The byte-level BPE tokenizer a data set is cut with (HF `tokenizers`, GPT-2's pre-tokenizer).

Ids 0, 1, 2 are the special tokens bos, eos, pad; 3..258 the 256 bytes; the merges follow. Any
UTF-8 text encodes (no unknown token) and decodes back to itself. Training is deterministic: the
trainer breaks ties between equally frequent pairs by pair ids, which follow from the sorted
byte alphabet, and `tokenizer.json` lists the vocabulary by id, so the same text and vocab size
give the same bytes whatever the thread count (RAYON_NUM_THREADS) or hash seed (tested).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from offchain.data.errors import DataInputError

SPECIAL = {"bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>"}
SPECIAL_TOKENS = tuple(SPECIAL.values())
BYTES = 256
MIN_VOCAB = len(SPECIAL_TOKENS) + BYTES
MAX_VOCAB = 2**32


def check_vocab_size(vocab_size: int) -> None:
    """A byte-level vocabulary holds the special tokens and every byte before any merge."""
    if vocab_size < MIN_VOCAB:
        raise DataInputError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs {len(SPECIAL_TOKENS)} "
            f"special tokens + {BYTES} byte tokens = {MIN_VOCAB} at least"
        )
    if vocab_size > MAX_VOCAB:
        raise DataInputError(f"--vocab-size {vocab_size} does not fit token ids of 32 bits")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most `vocab_size` tokens learnt from `texts` (fewer when the
    text runs out of pairs to merge: `get_vocab_size()` says how many)."""
    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def tokenizer_bytes(tokenizer: Tokenizer) -> bytes:
    """`tokenizer.json` as stored and pinned (what `Tokenizer.from_str` and HF's
    `PreTrainedTokenizerFast(tokenizer_file=...)` read)."""
    return tokenizer.to_str().encode()


def load_tokenizer(data: bytes) -> Tokenizer:
    return Tokenizer.from_str(data.decode())


class BpeTokenizer:
    """Text to ids and back with a stored `tokenizer.json`: what generation and the gateway use.
    Special tokens are never produced by `encode` and are dropped by `decode`."""

    def __init__(self, data: bytes) -> None:
        self._tokenizer = load_tokenizer(data)
        ids = special_ids(self._tokenizer)
        self.bos_id, self.eos_id, self.pad_id = ids["bos"], ids["eos"], ids["pad"]
        self.vocab_size: int = self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{"bos": id, "eos": id, "pad": id}."""
    ids = {name: tokenizer.token_to_id(token) for name, token in SPECIAL.items()}
    missing = [name for name, token_id in ids.items() if token_id is None]
    if missing:
        raise ValueError(f"tokenizer has no {', '.join(missing)} token")
    return ids  # type: ignore[return-value]


def token_dtype(vocab_size: int) -> Literal["uint16", "uint32"]:
    """Shard element type (little-endian): uint16 while every id fits, else uint32."""
    return "uint16" if vocab_size <= 2**16 else "uint32"
