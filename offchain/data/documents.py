r"""The user's files as documents: text, jsonl or parquet, each text format optionally gz/xz/bz2.

A document is what gets an eos token after it: a whole text file, the text field of one jsonl
line, the text column of one parquet row. Every problem with an input is a `DataInputError`, one
line naming the file (and line or row): a missing or empty file, a binary or non-UTF-8 file, a
jsonl line that is not a JSON object or lacks the field, a parquet file without the column.

A long document comes as pieces, each cut just before a newline (or tab, carriage return,
form feed, vertical tab) that a non-space character follows. The byte-level pre-tokenizer always
splits there: such a character ends every whitespace run it closes (GPT-2's `\s+(?!\S)` stops
before it, and only a plain space may prefix a word), so encoding the pieces one by one gives
exactly the ids of the whole document (tested), and memory stays bounded whatever a file's size.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import json
import lzma
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from offchain.data.errors import DataInputError

Format = Literal["text", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("text", "jsonl", "parquet")
_DECOMPRESS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),  # type: ignore[dict-item]
    ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),  # type: ignore[dict-item]
    ".bz2": lambda raw: bz2.BZ2File(raw, "rb"),  # type: ignore[dict-item]
}
_BY_SUFFIX: dict[str, Format] = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
}
PIECE_CHARS = 1 << 16
"""Pieces of a long document are cut once this many characters are buffered."""
_BLOCK = 1 << 20
_CUT = re.compile(r"(?=[\t\n\r\x0b\x0c]\S)")
_PARQUET_BATCH = 1024


@dataclass(frozen=True)
class Source:
    """One input file and how to read it."""

    path: Path
    format: Format

    @property
    def compression(self) -> str | None:
        suffix = self.path.suffix.lower()
        return suffix if suffix in _DECOMPRESS else None


@dataclass
class Fingerprint:
    """What a manifest records of an input: the sha256 and size of its decompressed bytes (of
    the file itself for parquet)."""

    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0

    def update(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)


@dataclass(frozen=True)
class Piece:
    """Consecutive text of one document; `last` marks its end (where eos goes)."""

    text: str
    last: bool


def parse_format(name: str | None) -> Format | None:
    """`--format` as given (None = tell each file's format from its name)."""
    if name is None:
        return None
    if name not in FORMATS:
        raise DataInputError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")
    return name  # type: ignore[return-value]


def find_sources(inputs: Sequence[Path], format: Format | None) -> list[Source]:
    """Every input file in order; a folder stands for the files under it, sorted by path (hidden
    files skipped), so the same folder gives the same order on every machine."""
    if not inputs:
        raise DataInputError("no input: pass --input PATH (a file or a folder, repeatable)")
    sources = []
    for path in inputs:
        if path.is_dir():
            files = sorted(
                (p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))),
                key=lambda p: p.relative_to(path).as_posix(),
            )
            if not files:
                raise DataInputError(f"input folder {path} holds no files")
        elif path.is_file():
            files = [path]
        else:
            raise DataInputError(f"input {path} not found")
        sources += [Source(file, format or _format_of(file)) for file in files]
    for source in sources:
        if source.format == "parquet" and source.compression:
            raise DataInputError(f"{source.path}: parquet compresses itself; pass the .parquet file")
    return sources


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _format_of(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _DECOMPRESS:
        suffixes.pop()
    found = _BY_SUFFIX.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise DataInputError(
            f"cannot tell the format of {path} from its name: pass --format {'|'.join(FORMATS)}"
        )
    return found


def read_pieces(
    source: Source,
    text_field: str,
    fingerprint: Fingerprint | None = None,
    advance: Callable[[int], object] | None = None,
) -> Iterator[Piece]:
    """The documents of `source` as pieces; `fingerprint` sees every byte, `advance(n)` is told of
    every n bytes read from disk (for a progress bar)."""
    fingerprint = fingerprint or Fingerprint()
    advance = advance or (lambda _count: None)
    if source.format == "parquet":
        yield from _parquet_pieces(source, text_field, fingerprint, advance)
        return
    try:
        with open(source.path, "rb") as handle:
            stream: BinaryIO = io.BufferedReader(_Counted(handle, advance), _BLOCK)
            if source.compression:
                stream = _DECOMPRESS[source.compression](stream)
            reader = _text_pieces if source.format == "text" else _jsonl_pieces
            yield from reader(source, stream, text_field, fingerprint)
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise DataInputError(f"cannot read {source.path}: {error}") from None


class _Counted(io.RawIOBase):
    """A file that reports the bytes read from disk (compressed ones too) to a progress bar."""

    def __init__(self, handle: BinaryIO, advance: Callable[[int], object]) -> None:
        self.handle, self.advance = handle, advance

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self.handle.readinto(buffer)
        self.advance(count)
        return count


def _text_pieces(source: Source, stream: BinaryIO, _field: str, fingerprint: Fingerprint) -> Iterator[Piece]:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    buffer, offset, seen_text = "", 0, False
    while block := stream.read(_BLOCK):
        fingerprint.update(block)
        nul = block.find(b"\x00")
        if nul >= 0:
            raise DataInputError(f"{source.path} looks binary (a NUL byte at offset {offset + nul})")
        try:
            buffer += decoder.decode(block)
        except UnicodeDecodeError as error:
            raise DataInputError(
                f"{source.path} is not UTF-8 text (invalid byte near offset {offset + error.start})"
            ) from None
        offset += len(block)
        seen_text = seen_text or bool(buffer.strip())
        while (cut := _cut(buffer)) is not None:
            yield Piece(buffer[:cut], last=False)
            buffer = buffer[cut:]
    try:
        buffer += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataInputError(f"{source.path} is not UTF-8 text (it ends inside a character)") from None
    if not (seen_text or buffer.strip()):
        raise DataInputError(f"input {source.path} is empty")
    yield Piece(buffer, last=True)


def _cut(text: str) -> int | None:
    """Where to end a piece of `text`: the first cut point after PIECE_CHARS characters, if any."""
    if len(text) <= PIECE_CHARS:
        return None
    match = _CUT.search(text, PIECE_CHARS)
    return None if match is None else match.start()


def split_document(text: str) -> Iterator[Piece]:
    """One document as pieces of about PIECE_CHARS characters (a piece ends at a cut point)."""
    while (cut := _cut(text)) is not None:
        yield Piece(text[:cut], last=False)
        text = text[cut:]
    yield Piece(text, last=True)


def _jsonl_pieces(source: Source, stream: BinaryIO, field: str, fingerprint: Fingerprint) -> Iterator[Piece]:
    documents = 0
    for number, line in enumerate(stream, start=1):
        fingerprint.update(line)
        where = f"{source.path} line {number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise DataInputError(f"{where} is not UTF-8 text") from None
        except json.JSONDecodeError as error:
            raise DataInputError(f"{where} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataInputError(f"{where} is not a JSON object")
        if field not in record:
            raise DataInputError(f"{where} has no {field!r} field (pass --text-field NAME)")
        text = record[field]
        if not isinstance(text, str):
            raise DataInputError(f"{where}: field {field!r} is {type(text).__name__}, not a string")
        if text:
            documents += 1
            yield from split_document(text)
    if not documents:
        raise DataInputError(f"input {source.path} is empty (no document with text)")


def _parquet_pieces(
    source: Source, field: str, fingerprint: Fingerprint, advance: Callable[[int], object]
) -> Iterator[Piece]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open(source.path, "rb") as handle:
            while block := handle.read(_BLOCK):
                fingerprint.update(block)
        table = pq.ParquetFile(source.path)
    except (OSError, pa.ArrowException) as error:
        raise DataInputError(f"{source.path} is not a readable parquet file ({error})") from None
    schema = table.schema_arrow
    if field not in schema.names:
        raise DataInputError(
            f"{source.path} has no column {field!r} (columns: {', '.join(schema.names)}; "
            "pass --text-field NAME)"
        )
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataInputError(f"column {field!r} of {source.path} holds {kind}, not text")
    rows = table.metadata.num_rows
    size = source.path.stat().st_size
    row, documents = 0, 0
    for batch in table.iter_batches(columns=[field], batch_size=_PARQUET_BATCH):
        for text in batch.column(0).to_pylist():
            if text is None:
                raise DataInputError(f"{source.path} row {row}: column {field!r} is null")
            row += 1
            if text:
                documents += 1
                yield from split_document(text)
        advance(size * batch.num_rows // max(rows, 1))
    if not documents:
        raise DataInputError(f"input {source.path} is empty (no row with text)")
