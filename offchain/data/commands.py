"""`pm data prepare`: turn your own files into a data set a model spec can name by CID."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from offchain import options

data_app = typer.Typer(help="Prepare training data: tokenizer, token shards, manifest.", no_args_is_help=True)


@data_app.command("prepare")
def data_prepare(
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--input", help="A file or a folder of files (repeatable; folders are read in path order)."
        ),
    ],
    vocab_size: Annotated[
        int,
        typer.Option("--vocab-size", help="Tokens in the BPE vocabulary (3 special + 256 bytes + merges)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for manifest.json, tokenizer.json and the shards.")
    ],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="text, jsonl or parquet (default: from each file's name; .gz/.xz/.bz2 read)."
        ),
    ] = None,
    text_field: Annotated[
        str, typer.Option("--text-field", help="The jsonl field / parquet column holding the text.")
    ] = "text",
    validation_fraction: Annotated[
        float, typer.Option("--validation-fraction", help="Share of the tokens held out (the stream's tail).")
    ] = 0.1,
    shard_tokens: Annotated[int, typer.Option("--shard-tokens", help="Token ids per shard.")] = 1 << 20,
    context: Annotated[
        int, typer.Option("--context", help="Sequence length: each split must hold one batch of it.")
    ] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows of that batch.")] = 8,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
    as_json: options.JsonOut = False,
) -> None:
    """Train a byte-level BPE tokenizer on your files, cut them into token shards with a held-out
    validation split, store and pin everything, and print the manifest CID for a model spec."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from offchain.data.documents import parse_format
    from offchain.data.prepare import PrepareOptions, prepare
    from offchain.storage.store import open_store

    settings = PrepareOptions(
        vocab_size=vocab_size,
        format=parse_format(format),
        text_field=text_field,
        validation_fraction=validation_fraction,
        shard_tokens=shard_tokens,
        context=context,
        batch_size=batch_size,
    )
    bar = (
        Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        if sys.stderr.isatty()
        else None
    )
    with bar or nullcontext():
        prepared = prepare(inputs, settings, out, open_store(ipfs_api, store), bar)
    if as_json:
        typer.echo(json.dumps(prepared.to_json()))
        return
    record = prepared.to_json()
    typer.echo(
        f"data set {record['manifest_cid']}\n"
        f"  tokenizer {record['tokenizer_cid']}: {record['vocab_size']} tokens, "
        f"ids stored as {record['dtype']}\n"
        f"  {record['documents']} document(s): {record['train_tokens']} train tokens in "
        f"{record['shards']['train']} shard(s), {record['validation_tokens']} validation tokens in "
        f"{record['shards']['validation']} shard(s)\n"
        f"  files in {record['out']}; stored and pinned"
        + (f" via {ipfs_api}" if ipfs_api else f" in {store}")
    )
