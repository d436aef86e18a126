"""`pm model export`: a trained model as a Hugging Face folder (weights, config, tokenizer).

torch and transformers are imported inside the command so `pm --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from offchain import options
from offchain.errors import UserError
from offchain.options import ChainModelOption, ModelIdOption, SpecOption


def model_export(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist, or be empty).")],
    model: ChainModelOption = None,
    model_spec: SpecOption = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="With --model-spec: the off-chain workers' --state-dir."),
    ] = None,
    model_id: ModelIdOption = 0,
    stage_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--stage-key",
            help="With --model: a stage key file (repeatable; one per stage, e.g. a worker's "
            "state-dir/stage-key-model<M>-stage<S>).",
        ),
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
    as_json: options.JsonOut = False,
) -> None:
    """Write a trained model as a folder AutoModelForCausalLM and PreTrainedTokenizerFast load.

    Off-chain: --model-spec FILE --state-dir DIR. On-chain: --model ID and every stage's key."""
    if (model is None) == (model_spec is None):
        raise UserError("pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)")
    if model_spec is not None and state_dir is None:
        raise UserError("--model-spec needs --state-dir (where its workers kept their state)")
    from offchain.creator.export import from_chain, from_state_dir, read_stage_keys
    from offchain.model.export import export_model
    from offchain.model.spec import load_spec
    from offchain.model.tokens import load_tokenizer
    from offchain.storage.store import open_store

    content = open_store(ipfs_api, store)
    if model_spec is not None:
        gathered = from_state_dir(load_spec(model_spec), state_dir, model_id)
    else:
        from offchain.chain.protocol import open_protocol

        protocol = open_protocol(rpc_url, None, deployments, signer=False)
        gathered = from_chain(protocol, content, model, read_stage_keys(stage_key or []))
    spec = gathered.spec
    written = export_model(spec, gathered.states, load_tokenizer(spec, content), out)
    if as_json:
        record = {"out": str(out), "files": written, "rounds": gathered.rounds, "spec_cid": spec.cid()}
        typer.echo(json.dumps(record))
        return
    typer.echo(
        f"exported {spec.name} (stages at rounds {gathered.rounds}) to {out}: {', '.join(written)}\n"
        f"  load it with AutoModelForCausalLM.from_pretrained({str(out)!r}) and "
        f"PreTrainedTokenizerFast.from_pretrained({str(out)!r})"
    )
