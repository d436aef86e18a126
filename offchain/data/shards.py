"""Token ids on disk: one stream while documents are encoded, then fixed-size shards per split.

A shard file is the raw little-endian ids (no header), named `<split>-<index:05d>.bin`, the
layout nanoGPT-style loaders memory-map; the manifest gives the dtype and each shard's CID.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offchain.data.manifest import SPLITS, Split

_COPY_TOKENS = 1 << 22


class TokenStream:
    """Ids appended to one file as documents are encoded (the total is known only at the end)."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.tokens = path, dtype, 0
        self._file = open(path, "xb")

    def append(self, ids: Sequence[int] | np.ndarray) -> None:
        array = np.asarray(ids, dtype=self.dtype)
        self._file.write(array.tobytes())
        self.tokens += len(array)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class ShardFile:
    split: Split
    index: int
    path: Path
    tokens: int


def shard_name(split: Split, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def cut_shards(
    stream: TokenStream,
    validation_tokens: int,
    shard_tokens: int,
    out: Path,
    advance: Callable[[int], object] | None = None,
) -> list[ShardFile]:
    """Split the stream into train (its first ids) and validation (its last `validation_tokens`),
    each cut into shards of `shard_tokens` ids (the last one shorter) written to `out`."""
    stream.close()
    ids = np.memmap(stream.path, dtype=stream.dtype, mode="r") if stream.tokens else np.empty(0, stream.dtype)
    bounds = {
        "train": (0, stream.tokens - validation_tokens),
        "validation": (stream.tokens - validation_tokens, stream.tokens),
    }
    files = []
    for split in SPLITS:
        start, end = bounds[split]
        for index, first in enumerate(range(start, end, shard_tokens)):
            last = min(first + shard_tokens, end)
            path = out / shard_name(split, index)
            with open(path, "xb") as handle:
                for chunk in range(first, last, _COPY_TOKENS):
                    handle.write(ids[chunk : min(chunk + _COPY_TOKENS, last)].tobytes())
                    if advance is not None:
                        advance(min(chunk + _COPY_TOKENS, last) - chunk)
            files.append(ShardFile(split, index, path, last - first))
    del ids
    stream.path.unlink()
    return files


def numpy_dtype(name: str) -> np.dtype:
    """The numpy type of a manifest `dtype` ("uint16" / "uint32", little-endian on every machine)."""
    return np.dtype(name).newbyteorder("<")


def read_shard(data: bytes | bytearray | memoryview, dtype: str, tokens: int, where: str) -> np.ndarray:
    """A stored shard as a read-only array; ValueError when its size is not `tokens` ids."""
    itemsize = numpy_dtype(dtype).itemsize
    if len(data) != tokens * itemsize:
        raise ValueError(f"shard {where} has {len(data)} bytes, the manifest says {tokens} ids of {dtype}")
    return np.frombuffer(data, dtype=numpy_dtype(dtype))
