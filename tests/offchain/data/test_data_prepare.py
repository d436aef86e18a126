"""`pm data prepare`: what it stores, that it is deterministic, and that bad input stores nothing."""

import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offchain.data import documents
from offchain.data.documents import DataInputError, Source, read_pieces
from offchain.data.prepare import PrepareOptions, prepare
from offchain.data.shipped import CORPUS, shipped_by_name
from offchain.data.tokenizer import BpeTokenizer, load_tokenizer
from offchain.storage.embedded import EmbeddedStore

REPO = Path(__file__).resolve().parents[3]
DOCS = [
    "The quick brown fox jumps over the lazy dog.\nA second line, with digits 12345.\n",
    "Ünïcödé text: naïve café, 東京, emoji 🙂, tabs\tand  double  spaces.\r\nWindows line end.",
    "def f(x):\n    return x ** 2  # code keeps its indentation\n\n\n" * 3,
] * 12
TINY = shipped_by_name("tiny")
SMALL = PrepareOptions(vocab_size=300, context=8, batch_size=2, shard_tokens=400)


def pm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    command = [sys.executable, "-m", "offchain.cli", "data", "prepare", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=REPO)


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: doc, "id": i}) + "\n" for i, doc in enumerate(docs)))
    return path


def test_prepared_data_set_is_the_documents_tokenized_with_eos_in_stored_shards(tiny_store, tiny_dataset):
    store, out = tiny_store
    manifest = tiny_dataset.manifest
    text = lzma.decompress(CORPUS.read_bytes()).decode()
    tokenizer = tiny_dataset.tokenizer()
    assert (manifest.tokenizer.vocab_size, manifest.dtype, manifest.documents) == (512, "uint16", 1)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2)
    stream = np.concatenate(
        [
            tiny_dataset.shard(split, i)
            for split in ("train", "validation")
            for i in range(len(manifest.splits[split].shards))
        ]
    )
    assert stream.tolist() == [*tokenizer.encode(text), tokenizer.eos_id]
    assert tokenizer.decode(stream[:-1].tolist()) == text
    assert manifest.splits["validation"].tokens == int(len(stream) * 0.1)
    assert [s.tokens for s in manifest.splits["train"].shards] == [65536, 65536, 195454 - 2 * 65536]
    # The folder holds the same bytes as the store, and everything is pinned.
    assert (out / "manifest.json").read_bytes() == store.get(TINY.manifest_cid) == manifest.canonical_json()
    assert (out / "tokenizer.json").read_bytes() == store.get(manifest.tokenizer.cid)
    assert (out / "train-00002.bin").read_bytes() == store.get(manifest.splits["train"].shards[2].cid)
    cids = [TINY.manifest_cid, manifest.tokenizer.cid] + [
        s.cid for split in manifest.splits.values() for s in split.shards
    ]
    assert sorted(cids) == store.pins()


def test_same_input_gives_byte_identical_output_across_processes_threads_and_hash_seeds(tmp_path, tiny_store):
    """The shipped CIDs (also in specs/*.json) come out of a fresh process with one tokenizer thread
    and another hash seed: the golden CIDs were made on another machine, so this holds across them."""
    _, reference = tiny_store
    result = pm(
        *TINY.command(tmp_path / "out", tmp_path / "store")[2:],
        env={"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "7"},
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["manifest_cid"], record["tokenizer_cid"]) == (TINY.manifest_cid, TINY.tokenizer_cid)
    names = sorted(path.name for path in reference.iterdir())
    assert names == sorted(path.name for path in (tmp_path / "out").iterdir())
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes(), name


def test_text_jsonl_parquet_and_compressed_inputs_give_the_same_tokens(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for index, doc in enumerate(DOCS):  # a folder is read in path order: zero-padded names
        (folder / f"{index:03d}.txt").write_text(doc)
    (folder / ".hidden.txt").write_text("never read")
    jsonl = write_jsonl(tmp_path / "docs.jsonl", DOCS, field="body")
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": DOCS, "n": list(range(len(DOCS)))}), parquet, row_group_size=7)
    outputs = {}
    for name, inputs, fmt in [
        ("folder", [folder], None),
        ("jsonl", [jsonl], None),
        ("gz", [gz], "jsonl"),
        ("parquet", [parquet], None),
    ]:
        store = EmbeddedStore(tmp_path / f"store-{name}", fsync=False)
        options = PrepareOptions(**{**SMALL.__dict__, "format": fmt, "text_field": "body"})
        prepared = prepare(inputs, options, tmp_path / f"out-{name}", store)
        outputs[name] = prepared.manifest
        assert prepared.manifest.documents == len(DOCS)
    splits = {name: manifest.splits for name, manifest in outputs.items()}
    assert splits["folder"] == splits["jsonl"] == splits["gz"] == splits["parquet"]
    assert len(splits["folder"]["train"].shards) > 1
    assert outputs["jsonl"].sources == outputs["gz"].sources  # the decompressed bytes are fingerprinted
    assert [s.format for s in outputs["parquet"].sources] == ["parquet"]
    assert outputs["folder"].text_field is None and outputs["jsonl"].text_field == "body"


def test_long_documents_are_encoded_in_pieces_exactly_as_whole(tmp_path, monkeypatch):
    text = ("word  \n\tindent\r\nnext   \n\n  spaced\x0cfeed 'quote\n" * 50) + "end"
    tokenizer = load_tokenizer(
        prepare(
            [write_jsonl(tmp_path / "a.jsonl", DOCS)], SMALL, tmp_path / "out", EmbeddedStore(tmp_path / "s")
        )
        .out.joinpath("tokenizer.json")
        .read_bytes()
    )
    monkeypatch.setattr(documents, "PIECE_CHARS", 37)
    path = tmp_path / "long.txt"
    path.write_text(text, newline="")
    pieces = list(read_pieces(Source(path, "text"), "text"))
    assert len(pieces) > 20 and [p.last for p in pieces].count(True) == 1
    assert "".join(p.text for p in pieces) == text
    by_piece = [i for p in pieces for i in tokenizer.encode(p.text, add_special_tokens=False).ids]
    assert by_piece == tokenizer.encode(text, add_special_tokens=False).ids


def test_bpe_tokenizer_round_trips_any_text(tiny_dataset):
    tokenizer = tiny_dataset.tokenizer()
    assert isinstance(tokenizer, BpeTokenizer) and tokenizer.vocab_size == 512
    for text in ["def train(", "Protocol Models are ", "東京 🙂 \x00 \t\n", ""]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode([tokenizer.bos_id, *tokenizer.encode("a"), tokenizer.eos_id]) == "a"


TINY_VOCAB = {"vocab_size": 300, "context": 8, "batch_size": 2}


def bad_inputs(tmp_path: Path) -> dict[str, tuple[str, dict, str]]:
    """name -> (input, options, the one line `pm data prepare` prints). Options may hold `format`
    (as typed) and `out` (else a fresh folder)."""
    good = str(write_jsonl(tmp_path / "good.jsonl", DOCS))
    files = {
        "empty.txt": b"",
        "blank.txt": b" \n\t\n",
        "binary.txt": b"text then \x00\x01\x02 binary",
        "latin1.txt": "café".encode("latin-1") + b" more",
        "notjson.jsonl": b'{"text": "ok"}\n{"text": oops}\n',
        "nofield.jsonl": b'{"text": "ok"}\n{"body": "x"}\n',
        "array.jsonl": b'["a"]\n',
        "number.jsonl": b'{"text": 5}\n',
        "unknown.csv": b"a,b\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocolumn.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    (tmp_path / "notempty").mkdir()
    (tmp_path / "notempty" / "mine.txt").write_text("keep me")
    p = tmp_path
    return {
        "missing": (f"{p}/nope.txt", TINY_VOCAB, f"input {p}/nope.txt not found"),
        "empty": (f"{p}/empty.txt", TINY_VOCAB, f"input {p}/empty.txt is empty"),
        "blank": (f"{p}/blank.txt", TINY_VOCAB, f"input {p}/blank.txt is empty"),
        "binary": (f"{p}/binary.txt", TINY_VOCAB, f"{p}/binary.txt looks binary (a NUL byte at offset 10)"),
        "latin1": (
            f"{p}/latin1.txt",
            TINY_VOCAB,
            f"{p}/latin1.txt is not UTF-8 text (invalid byte near offset 3)",
        ),
        "notjson": (
            f"{p}/notjson.jsonl",
            TINY_VOCAB,
            f"{p}/notjson.jsonl line 2 is not JSON (Expecting value)",
        ),
        "nofield": (
            f"{p}/nofield.jsonl",
            TINY_VOCAB,
            f"{p}/nofield.jsonl line 2 has no 'text' field (pass --text-field NAME)",
        ),
        "array": (f"{p}/array.jsonl", TINY_VOCAB, f"{p}/array.jsonl line 1 is not a JSON object"),
        "number": (
            f"{p}/number.jsonl",
            TINY_VOCAB,
            f"{p}/number.jsonl line 1: field 'text' is int, not a string",
        ),
        "suffix": (
            f"{p}/unknown.csv",
            TINY_VOCAB,
            f"cannot tell the format of {p}/unknown.csv from its name: pass --format text|jsonl|parquet",
        ),
        "format": (
            good,
            {**TINY_VOCAB, "format": "csv"},
            "unknown format 'csv': use one of text, jsonl, parquet",
        ),
        "column": (
            f"{p}/nocolumn.parquet",
            TINY_VOCAB,
            f"{p}/nocolumn.parquet has no column 'text' (columns: body; pass --text-field NAME)",
        ),
        "ints": (f"{p}/ints.parquet", TINY_VOCAB, f"column 'text' of {p}/ints.parquet holds int64, not text"),
        "vocab": (
            good,
            {"vocab_size": 258},
            "--vocab-size 258 is too small: a byte-level BPE needs 3 special tokens + 256 byte tokens "
            "= 259 at least",
        ),
        "batch": (
            good,
            {"vocab_size": 300, "context": 256, "batch_size": 8},
            "too little text: 2628 tokens in all, 262 in the validation split, fewer than one batch of 8 x "
            "(context 256 + 1) = 2056 tokens (add text, or lower --batch-size / --context)",
        ),
        "out": (
            good,
            {**TINY_VOCAB, "out": f"{p}/notempty"},
            f"--out {p}/notempty is not empty and was not written by pm data prepare: choose another folder",
        ),
    }


def test_bad_input_is_one_line_and_stores_nothing(tmp_path):
    """Every case in-process (fast), then one through the CLI for the exit code and stderr."""
    cases = bad_inputs(tmp_path)
    for name, (source, given, line) in cases.items():
        options = dict(given)
        out = Path(options.pop("out", tmp_path / f"out-{name}"))
        fmt = options.pop("format", None)
        store = EmbeddedStore(tmp_path / f"store-{name}", fsync=False)
        with pytest.raises(DataInputError) as error:
            prepare([Path(source)], PrepareOptions(**options, format=documents.parse_format(fmt)), out, store)
        assert str(error.value) == line, name
        assert store.pins() == [] and not any((tmp_path / f"store-{name}" / "blocks").rglob("*.*")), name
        assert name == "out" or not out.exists(), name
    assert [path.name for path in (tmp_path / "notempty").iterdir()] == ["mine.txt"]
    assert not [path.name for path in tmp_path.iterdir() if ".prepare-" in path.name]
    source, _, line = cases["notjson"]
    cli = [
        "--input",
        source,
        "--vocab-size",
        "300",
        "--out",
        f"{tmp_path}/cli-out",
        "--store",
        f"{tmp_path}/cli-store",
    ]
    result = pm(*cli)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (1, line, "")
    assert EmbeddedStore(tmp_path / "cli-store").pins() == []
    assert not (tmp_path / "cli-out").exists()
