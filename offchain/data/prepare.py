"""`pm data prepare`: the user's files become a BPE tokenizer, token shards and a manifest, stored.

Two passes over the inputs, then the shards: pass 1 checks every file (a bad one stops
everything before anything is written or stored) and trains the tokenizer on the documents as
they stream by; pass 2 encodes them (eos after each) into one stream of ids; the stream's last
`validation_fraction` becomes the validation split, and each split is cut into shards. Only
then are the shards, `tokenizer.json` and the manifest stored and pinned, and the folder `--out`
appears, whole, in one rename. Same files and options give the same bytes and CIDs everywhere.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from offchain.data.documents import Fingerprint, Format, Piece, Source, find_sources, read_pieces
from offchain.data.errors import DataInputError
from offchain.data.manifest import Manifest, ShardInfo, SourceInfo, SplitInfo
from offchain.data.shards import ShardFile, TokenStream, cut_shards, numpy_dtype
from offchain.data.tokenizer import (
    check_vocab_size,
    special_ids,
    token_dtype,
    tokenizer_bytes,
    train_tokenizer,
)
from offchain.storage.store import Store

MANIFEST_FILE, TOKENIZER_FILE = "manifest.json", "tokenizer.json"
_OUTPUT = re.compile(r"^(manifest\.json|tokenizer\.json|(train|validation)-\d{5}\.bin)$")
_ENCODE_CHARS, _ENCODE_PIECES = 1 << 20, 4096


@dataclass(frozen=True)
class PrepareOptions:
    """How to cut the data set. `context` and `batch_size` only size the smallest usable split:
    each must hold one batch of `batch_size` windows of `context + 1` ids."""

    vocab_size: int
    format: Format | None = None
    text_field: str = "text"
    validation_fraction: float = 0.1
    shard_tokens: int = 1 << 20
    context: int = 256
    batch_size: int = 8

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * (self.context + 1)

    def check(self) -> None:
        check_vocab_size(self.vocab_size)
        if not 0 < self.validation_fraction < 1:
            raise DataInputError(f"--validation-fraction {self.validation_fraction} must be between 0 and 1")
        if self.context < 1 or self.batch_size < 1:
            raise DataInputError("--context and --batch-size must be at least 1")
        if self.shard_tokens <= self.context:
            raise DataInputError(
                f"--shard-tokens {self.shard_tokens} must exceed --context {self.context}: "
                "a training window never spans two shards"
            )


@dataclass(frozen=True)
class Prepared:
    """A stored data set: its manifest (and CID) and the folder holding the same files."""

    manifest_cid: str
    manifest: Manifest
    out: Path

    def to_json(self) -> dict:
        train, validation = self.manifest.splits["train"], self.manifest.splits["validation"]
        return {
            "manifest_cid": self.manifest_cid,
            "tokenizer_cid": self.manifest.tokenizer.cid,
            "vocab_size": self.manifest.tokenizer.vocab_size,
            "dtype": self.manifest.dtype,
            "documents": self.manifest.documents,
            "train_tokens": train.tokens,
            "validation_tokens": validation.tokens,
            "shards": {"train": len(train.shards), "validation": len(validation.shards)},
            "out": str(self.out),
        }


class _Phase:
    """One line of the progress display (nothing when there is no display)."""

    def __init__(self, progress: Progress | None, description: str, total: int | None) -> None:
        self.progress = progress
        self.task = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, count: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, count)


def prepare(
    inputs: Sequence[Path],
    options: PrepareOptions,
    out: Path,
    store: Store,
    progress: Progress | None = None,
) -> Prepared:
    """Prepare, store and pin a data set from `inputs`; write the same files to `out`."""
    options.check()
    sources = find_sources(inputs, options.format)
    _check_out(out)
    size = sum(source.path.stat().st_size for source in sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.prepare-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        prints = [Fingerprint() for _ in sources]
        reading = _Phase(progress, "read + train tokenizer", size)
        pieces = _all_pieces(sources, options.text_field, prints, reading.advance)
        tokenizer = train_tokenizer((piece.text for piece in pieces), options.vocab_size)
        vocab_size = tokenizer.get_vocab_size()
        dtype = token_dtype(vocab_size)
        ids = special_ids(tokenizer)
        stream = TokenStream(work / "tokens.tmp", numpy_dtype(dtype))
        encoding = _Phase(progress, "tokenize", size)
        documents = 0
        for batch in _batches(_all_pieces(sources, options.text_field, None, encoding.advance)):
            encoded = tokenizer.encode_batch([piece.text for piece in batch], add_special_tokens=False)
            row: list[int] = []
            for piece, piece_ids in zip(batch, encoded, strict=True):
                row += piece_ids.ids
                if piece.last:
                    row.append(ids["eos"])
                    documents += 1
            stream.append(row)
        validation_tokens = int(stream.tokens * options.validation_fraction)
        _check_sizes(stream.tokens, validation_tokens, options)
        files = cut_shards(
            stream,
            validation_tokens,
            options.shard_tokens,
            work,
            _Phase(progress, "write shards", stream.tokens).advance,
        )
        (work / TOKENIZER_FILE).write_bytes(tokenizer_bytes(tokenizer))
        storing = _Phase(progress, "store + pin", len(files) + 2)
        splits = _store_shards(store, files, storing.advance)
        tokenizer_cid = store.put((work / TOKENIZER_FILE).read_bytes())
        storing.advance(1)
        manifest = Manifest(
            tokenizer={
                "cid": tokenizer_cid,
                "vocab_size": vocab_size,
                "bos_id": ids["bos"],
                "eos_id": ids["eos"],
                "pad_id": ids["pad"],
            },
            dtype=dtype,
            shard_tokens=options.shard_tokens,
            documents=documents,
            splits=splits,
            sources=tuple(
                SourceInfo(format=source.format, sha256=print_.digest.hexdigest(), bytes=print_.size)
                for source, print_ in zip(sources, prints, strict=True)
            ),
            text_field=options.text_field if any(s.format != "text" for s in sources) else None,
            validation_fraction=options.validation_fraction,
        )
        data = manifest.canonical_json()
        (work / MANIFEST_FILE).write_bytes(data)
        manifest_cid = store.put(data)
        storing.advance(1)
        _replace(out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Prepared(manifest_cid, manifest, out)


def _all_pieces(
    sources: list[Source],
    text_field: str,
    prints: list[Fingerprint] | None,
    advance: Callable[[int], object],
) -> Iterator[Piece]:
    for index, source in enumerate(sources):
        yield from read_pieces(source, text_field, prints[index] if prints else None, advance)


def _batches(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    """Pieces grouped for `encode_batch` (which spreads a batch over the cores)."""
    batch: list[Piece] = []
    chars = 0
    for piece in pieces:
        batch.append(piece)
        chars += len(piece.text)
        if chars >= _ENCODE_CHARS or len(batch) >= _ENCODE_PIECES:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _check_sizes(total: int, validation: int, options: PrepareOptions) -> None:
    need = options.batch_tokens
    for split, tokens in (("train", total - validation), ("validation", validation)):
        if tokens < need:
            raise DataInputError(
                f"too little text: {total} tokens in all, {tokens} in the {split} split, fewer than one "
                f"batch of {options.batch_size} x (context {options.context} + 1) = {need} tokens "
                "(add text, or lower --batch-size / --context)"
            )


def _store_shards(
    store: Store, files: list[ShardFile], advance: Callable[[int], object]
) -> dict[str, SplitInfo]:
    shards: dict[str, list[ShardInfo]] = {"train": [], "validation": []}
    for file in files:
        shards[file.split].append(ShardInfo(cid=store.put(file.path.read_bytes()), tokens=file.tokens))
        advance(1)
    return {
        split: SplitInfo(tokens=sum(shard.tokens for shard in infos), shards=tuple(infos))
        for split, infos in shards.items()
    }


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataInputError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not _written_by_prepare(out):
        raise DataInputError(
            f"--out {out} is not empty and was not written by pm data prepare: choose another folder"
        )


def _written_by_prepare(folder: Path) -> bool:
    names = [path.name for path in folder.iterdir()]
    return MANIFEST_FILE in names and all(_OUTPUT.match(name) for name in names)


def _replace(out: Path, work: Path) -> None:
    """Put the finished folder in place of `out` (a previous prepare's output is replaced)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)
