"""The dataset manifest: what a spec's `dataset.manifest_cid` names.

Canonical JSON (sorted keys, no spaces, UTF-8), stored plaintext and pinned beside the shards it
lists (a data set is public; only checkpoints are encrypted):

    {"documents": D, "dtype": "uint16"|"uint32", "shard_tokens": S,
     "sources": [{"bytes": n, "format": "text"|"jsonl"|"parquet", "sha256": hex}, ...],
     "splits": {"train": {"shards": [{"cid": "Qm..", "tokens": n}, ...], "tokens": N},
                "validation": {...}},
     "text_field": "text"|null,
     "tokenizer": {"bos_id": 0, "cid": "Qm..", "eos_id": 1, "pad_id": 2, "vocab_size": V},
     "validation_fraction": f, "version": 1}

A shard is the raw little-endian token ids of `dtype`, nothing else (numpy.frombuffer reads it);
every shard of a split holds `shard_tokens` ids but its last. The token stream is the documents
in input order, each followed by eos; the validation split is its last floor(total x fraction)
ids. `sources` name the inputs by the sha256 of their (decompressed) bytes, not by path, so the
same files give the same manifest on any machine.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offchain.data.documents import Format
from offchain.data.errors import DatasetError

VERSION = 1
Split = Literal["train", "validation"]
SPLITS: tuple[Split, ...] = ("train", "validation")
_CID = r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenizerInfo(_Strict):
    """The stored `tokenizer.json` and the ids a trainer or a sampler needs without loading it."""

    cid: str = Field(pattern=_CID)
    vocab_size: int = Field(gt=0)
    bos_id: int = Field(ge=0)
    eos_id: int = Field(ge=0)
    pad_id: int = Field(ge=0)


class ShardInfo(_Strict):
    cid: str = Field(pattern=_CID)
    tokens: int = Field(gt=0)


class SplitInfo(_Strict):
    tokens: int = Field(gt=0)
    shards: tuple[ShardInfo, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _counts_add_up(self) -> SplitInfo:
        if sum(shard.tokens for shard in self.shards) != self.tokens:
            raise ValueError(f"shard token counts do not add up to the split's {self.tokens}")
        return self


class SourceInfo(_Strict):
    format: Format
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Strict):
    version: Literal[1] = VERSION
    tokenizer: TokenizerInfo
    dtype: Literal["uint16", "uint32"]
    shard_tokens: int = Field(gt=0)
    documents: int = Field(gt=0)
    splits: dict[Split, SplitInfo]
    sources: tuple[SourceInfo, ...] = Field(min_length=1)
    text_field: str | None
    validation_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"splits must be exactly {', '.join(SPLITS)}")
        if self.dtype == "uint16" and self.tokenizer.vocab_size > 2**16:
            raise ValueError(f"vocab {self.tokenizer.vocab_size} does not fit uint16 ids")
        for name, split in self.splits.items():
            if any(shard.tokens > self.shard_tokens for shard in split.shards) or any(
                shard.tokens != self.shard_tokens for shard in split.shards[:-1]
            ):
                raise ValueError(f"{name} shards must hold shard_tokens={self.shard_tokens} ids but the last")
        return self

    @property
    def total_tokens(self) -> int:
        return sum(split.tokens for split in self.splits.values())

    def canonical_json(self) -> bytes:
        """The stored bytes: sorted keys, no whitespace. Equal manifests give equal bytes (and CID)."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A stored manifest, validated; DatasetError names `where` (its CID) and the first problem."""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "manifest"
        message = first["msg"].removeprefix("Value error, ")
        raise DatasetError(f"{where} is not a dataset manifest: {field}: {message}") from None
