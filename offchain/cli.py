"""The `pm` command line: one entry point for every role in the network.

Commands whose implementation has not landed yet say so and exit non-zero, so scripts
never mistake a placeholder for a result.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offchain import __version__, options
from offchain.errors import UserError
from offchain.gateway.commands import gateway_app, infer
from offchain.storage.commands import store_app
from offchain.swarm.commands import driver_app, worker_app
from offchain.verifier.commands import verifier_app

stderr = Console(stderr=True, soft_wrap=True)  # an error stays one line, however narrow the terminal

app = typer.Typer(
    name="pm",
    help="Protocol Models: train a shard of an open model, earn shares, serve and pay for inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Create and inspect protocol models.", no_args_is_help=True)
for sub_app, name in [
    (model_app, "model"),
    (worker_app, "worker"),
    (driver_app, "driver"),
    (verifier_app, "verifier"),
    (gateway_app, "gateway"),
    (store_app, "store"),
]:
    app.add_typer(sub_app, name=name)
app.command()(infer)


@app.command()
def version() -> None:
    """Print the version of the `pm` tool."""
    typer.echo(f"pm {__version__}")


@model_app.command("create")
def model_create(
    spec: Annotated[Path, typer.Option("--spec", help="Model spec JSON file (see specs/).")],
    shares_per_work_unit: Annotated[
        int, typer.Option("--shares-per-work-unit", help="Shares minted per verified work unit (wei units).")
    ] = 10**18,
    revenue_asset: Annotated[
        str, typer.Option("--revenue-asset", help="'eth' or the ERC-20 address inference is paid in.")
    ] = "eth",
    operator: Annotated[
        str | None, typer.Option("--operator", help="Receiver of the operator fee (default: you).")
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
    as_json: options.JsonOut = False,
) -> None:
    """Pin a model spec and register the model on-chain (its share token is created with it)."""
    from offchain.chain.protocol import open_protocol
    from offchain.models import create_model
    from offchain.storage.store import open_store

    protocol = open_protocol(rpc_url, key_file, deployments, signer=True)
    created = create_model(
        protocol,
        open_store(ipfs_api, store),
        spec,
        shares_per_work_unit=shares_per_work_unit,
        revenue_asset=revenue_asset,
        operator=operator,
    )
    if as_json:
        typer.echo(json.dumps(created.to_json()))
        return
    model = created.model
    typer.echo(
        f"model {model.model_id} created: {model.num_stages} stages, spec {model.spec_cid}\n"
        f"  shares token {model.shares}, revenue in {'ETH' if model.pays_in_eth else model.revenue_asset}\n"
        f"  tx {created.tx_hash} (block {created.block})"
    )


@model_app.command("show")
def model_show(
    model_id: options.ModelId,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Show what the registry holds for a model."""
    from offchain.chain.protocol import open_protocol

    model = open_protocol(rpc_url, None, deployments, signer=False).model(model_id)
    record = model.to_json()
    typer.echo(json.dumps(record) if as_json else "\n".join(f"{k:>22}: {v}" for k, v in record.items()))


@app.command()
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
    from offchain.wallet import claim as send_claim
    from offchain.wallet import holding, models_held

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


@app.command()
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
    from offchain.chain.protocol import open_protocol
    from offchain.models import checked_address
    from offchain.wallet import holding

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


@app.command()
def status(
    model_id: options.ModelId,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Show a model's stages, members, finalized rounds, claims by state, shares and revenue."""
    from rich.table import Table

    from offchain.chain.protocol import open_protocol
    from offchain.status import model_status

    report = model_status(open_protocol(rpc_url, None, deployments, signer=False), model_id)
    if as_json:
        typer.echo(json.dumps(report))
        return
    model, claims, revenue = report["model"], report["claims"], report["revenue"]
    table = Table(title=f"model {model_id} ({model['status']}, spec {model['spec_cid']})")
    for column in ("stage", "members", "finalized round", "checkpoint"):
        table.add_column(column)
    for stage in report["stages"]:
        members = "\n".join(stage["members"]) or "-"
        table.add_row(str(stage["stage"]), members, str(stage["round"]), stage["checkpoint_cid"] or "-")
    stdout = Console(soft_wrap=True)
    stdout.print(table)
    stdout.print(
        f"claims: {claims['pending']} pending, {claims['finalized']} finalized, "
        f"{claims['rejected']} rejected ({claims['challenged']} challenged)\n"
        f"shares: {report['shares']['supply']} (wei units)\n"
        f"revenue (wei): {revenue['total_wei']} to holders, {revenue['claimed_wei']} claimed, "
        f"{revenue['held_wei']} held until the first shares",
        markup=False,
        highlight=False,
    )


@app.command()
def demo(
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Training rounds.")] = 3,
    workers_per_stage: Annotated[
        int, typer.Option("--workers-per-stage", min=1, max=4, help="Honest workers per stage.")
    ] = 1,
    cheater: Annotated[
        bool, typer.Option("--cheater", help="Add a dishonest worker; watch it get caught and slashed.")
    ] = False,
    ipfs_api: options.IpfsApi = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for summary.json, loss.png, the store and the logs.")
    ] = Path(".pm/demo"),
) -> None:
    """Run the whole network on this machine: deploy, train, verify, serve, claim, summarise."""
    from offchain.demo.config import DemoConfig
    from offchain.demo.run import run_demo

    console = Console(width=None if sys.stdout.isatty() else 120)  # the tables stay readable in a log
    config = DemoConfig(
        rounds=rounds, workers_per_stage=workers_per_stage, cheater=cheater, ipfs_api=ipfs_api, out=out
    )
    try:
        run_demo(config, console)
    except KeyboardInterrupt:
        stderr.print("pm demo: interrupted; every process it started has been stopped", style="red")
        raise typer.Exit(code=130) from None


def main() -> None:
    """Console-script entry point: user mistakes become one red line and a non-zero exit.

    Settings in ./.env (see .env.example) fill in environment variables that are not set already,
    as brownie does for the same file."""
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        app()
    except UserError as error:
        stderr.print(str(error), style="red", markup=False, highlight=False)
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
