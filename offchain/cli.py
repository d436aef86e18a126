"""The `pm` command line: one entry point for every role in the network.

Each role's commands live in its package (worker/, verifier/, gateway/, holder/, swarm/ for the
driver, storage/); this module assembles them and adds the creator's and everyone's read commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offchain import __version__, options
from offchain.creator.commands import model_export
from offchain.data.commands import data_app
from offchain.demo.config import STAGE_GRACE_S
from offchain.errors import UserError
from offchain.gateway.commands import gateway_app, infer
from offchain.holder.commands import balance, claim
from offchain.storage.commands import store_app
from offchain.swarm.commands import driver_app
from offchain.verifier.commands import verifier_app
from offchain.web.commands import web_app
from offchain.worker.commands import worker_app

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
    (data_app, "data"),
    (web_app, "web"),
]:
    app.add_typer(sub_app, name=name)
for command in (infer, claim, balance):
    app.command()(command)
model_app.command("export")(model_export)


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
    from offchain.chain.models import create_model
    from offchain.chain.protocol import open_protocol
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


def _set_role(
    role: str,
    model_id: int,
    account: str,
    remove: bool,
    rpc_url: str,
    key_file: Path | None,
    deployments: Path,
) -> None:
    from offchain.chain.models import set_role
    from offchain.chain.protocol import open_protocol

    protocol = open_protocol(rpc_url, key_file, deployments, signer=True)
    tx = set_role(protocol, model_id, role, account, not remove)
    typer.echo(f"model {model_id}: {account} {'is no longer' if remove else 'is now'} a {role} (tx {tx})")


RoleAccount = Annotated[str, typer.Argument(help="The account's address.")]
RemoveRole = Annotated[bool, typer.Option("--remove", help="Take the role away instead.")]


@model_app.command("driver")
def model_driver(
    model_id: options.ModelId,
    account: RoleAccount,
    remove: RemoveRole = False,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
) -> None:
    """Let ACCOUNT drive the model's training rounds (the creator's key): stage workers accept
    round control and stage-0 inputs only from the model's drivers."""
    _set_role("driver", model_id, account, remove, rpc_url, key_file, deployments)


@model_app.command("gateway")
def model_gateway(
    model_id: options.ModelId,
    account: RoleAccount,
    remove: RemoveRole = False,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
) -> None:
    """Let ACCOUNT serve the model's inference (the operator's key): stage workers answer `infer`
    only for the model's gateways."""
    _set_role("gateway", model_id, account, remove, rpc_url, key_file, deployments)


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
def status(
    model_id: options.ModelId,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    as_json: options.JsonOut = False,
) -> None:
    """Show a model's stages (members, validators, finalized rounds), claims by state, shares and revenue."""
    from rich.table import Table

    from offchain.chain.protocol import open_protocol
    from offchain.chain.status import model_status

    report = model_status(open_protocol(rpc_url, None, deployments, signer=False), model_id)
    if as_json:
        typer.echo(json.dumps(report))
        return
    model, claims, revenue = report["model"], report["claims"], report["revenue"]
    table = Table(title=f"model {model_id} ({model['status']}, spec {model['spec_cid']})")
    for column in ("stage", "members", "validators", "finalized round", "checkpoint"):
        table.add_column(column)
    for stage in report["stages"]:
        members = "\n".join(stage["members"]) or "-"
        validators = "\n".join(stage["validators"]) or "-"
        checkpoint = stage["checkpoint_cid"] or "-"
        table.add_row(str(stage["stage"]), members, validators, str(stage["round"]), checkpoint)
    stdout = Console(soft_wrap=True)
    stdout.print(table)
    stdout.print(
        f"claims: {claims['pending']} pending, {claims['finalized']} finalized, "
        f"{claims['rejected']} rejected, {claims['voided']} voided ({claims['challenged']} challenged); "
        f"rounds: {claims['pending_rounds']} pending, {claims['finalized_rounds']} finalized, "
        f"{claims['rejected_rounds']} rejected, {claims['voided_rounds']} voided\n"
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
        bool,
        typer.Option(
            "--cheater",
            help="Add a worker that lies about round 2 and keeps claiming on top of the lie; watch it get "
            "caught, slashed once, and its later claims voided.",
        ),
    ] = False,
    faults: Annotated[
        bool,
        typer.Option(
            "--faults",
            help="Kill a stage replica mid-round, the only worker of stage 0 between publish and "
            "claim, a verifier mid-replay and the gateway mid-request, cut the chain's RPC for 10 s; "
            "restart each, table the recoveries and check the invariants (needs --rounds 3+; 2 workers "
            "per stage, 1 on stage 0).",
        ),
    ] = False,
    stage_grace: Annotated[
        float,
        typer.Option(
            "--stage-grace",
            min=1.0,
            envvar="PM_DEMO_STAGE_GRACE",
            help="Seconds a stage may have no live worker (time for one to come back) before the run "
            "stops naming it; longer on slow or flaky hardware.",
        ),
    ] = STAGE_GRACE_S,
    ipfs_api: options.IpfsApi = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for summary.json, loss.png, the store and the logs.")
    ] = Path(".pm/demo"),
) -> None:
    """Run the whole network on this machine: deploy, train, verify, serve, claim, summarise."""
    from offchain.demo.config import DemoConfig
    from offchain.demo.faults import MIN_ROUNDS, MIN_STAGE_GRACE_S
    from offchain.demo.run import run_demo

    if faults and rounds < MIN_ROUNDS:
        raise UserError(f"--faults needs --rounds {MIN_ROUNDS} or more (the RPC endpoint is cut in round 3)")
    if faults and stage_grace < MIN_STAGE_GRACE_S:
        raise UserError(
            f"--faults needs --stage-grace {MIN_STAGE_GRACE_S:.0f} or more (stage 0's only worker is killed "
            "and restarted: the run must wait for it)"
        )
    console = Console(width=None if sys.stdout.isatty() else 120)  # the tables stay readable in a log
    config = DemoConfig(
        rounds=rounds,
        workers_per_stage=max(workers_per_stage, 2) if faults else workers_per_stage,
        cheater=cheater,
        faults=faults,
        stage_grace_s=stage_grace,
        ipfs_api=ipfs_api,
        out=out,
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
