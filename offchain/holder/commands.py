"""`pm claim` and `pm balance`: a share holder's revenue, read and claimed."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated

import typer

from offchain import options
from offchain.errors import UserError


def claim(
    model_id: Annotated[int | None, typer.Option("--model", min=1, help="Model to claim from.")] = None,
    all_models: Annotated[bool, typer.Option("--all-models", help="Claim from every model held.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the amounts; send nothing.")] = False,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Claim the inference revenue your shares have earned (ETH or the model's ERC-20)."""
    from offchain.chain.protocol import open_protocol
    from offchain.holder.wallet import claim as send_claim
    from offchain.holder.wallet import holding, models_held

    if (model_id is None) == (not all_models):
        raise UserError("pass exactly one of --model ID and --all-models")
    protocol = open_protocol(rpc_url, key_file, deployments, signer=True)
    holder = protocol.client.address
    model_ids = models_held(protocol, holder) if all_models else [model_id]
    records = []
    for held in (holding(protocol, one, holder) for one in model_ids):
        record = {**held.to_json(), "amount_wei": "0", "tx": None}
        line = f"model {held.model_id}: claimable {held.asset.format(held.claimable)}"
        if held.claimable and not dry_run:
            done = send_claim(protocol, held.model_id)
            record.update(done.to_json())
            line += f" -> received {done.asset.format(done.amount)}, tx {done.tx_hash}"
        elif dry_run:
            line += " (dry run: nothing sent)"
        records.append(record)
        if not as_json:
            typer.echo(line)
    if as_json:
        typer.echo(json.dumps({"holder": holder, "dry_run": dry_run, "claims": records}))
    elif not records:
        typer.echo(f"{holder} holds no shares and no revenue in any model")


def balance(
    model_id: options.ModelId,
    address: Annotated[
        str | None, typer.Option("--address", help="Holder to show (default: the address of your key).")
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Show shares, percent of supply, claimable revenue and revenue claimed so far."""
    from offchain.chain.models import checked_address
    from offchain.chain.protocol import open_protocol
    from offchain.holder.wallet import holding

    protocol = open_protocol(rpc_url, key_file, deployments, signer=address is None)
    holder = checked_address(address, "--address") if address else protocol.client.address
    held = holding(protocol, model_id, holder)
    if as_json:
        typer.echo(json.dumps(held.to_json()))
        return
    shares = Decimal(held.shares).scaleb(-18).normalize()
    typer.echo(
        f"model {model_id}, holder {holder}\n"
        f"  shares     {shares:f} ({held.percent_of_supply:.2f}% of supply)\n"
        f"  claimable  {held.asset.format(held.claimable)}\n"
        f"  claimed    {held.asset.format(held.claimed)}"
    )
