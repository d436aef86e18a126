"""The `pm` command line: one entry point for every role in the network.

Commands whose implementation has not landed yet say so and exit non-zero, so scripts
never mistake a placeholder for a result.
"""

from __future__ import annotations

import typer
from rich.console import Console

from offchain import __version__
from offchain.errors import UserError, not_landed
from offchain.storage.commands import store_app
from offchain.swarm.commands import driver_app, worker_app

stderr = Console(stderr=True)

app = typer.Typer(
    name="pm",
    help="Protocol Models: train a shard of an open model, earn shares, serve and pay for inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Create and inspect protocol models.", no_args_is_help=True)
verifier_app = typer.Typer(help="Validator: replay claims, challenge and vote.", no_args_is_help=True)
gateway_app = typer.Typer(help="Sell inference through the stage workers.", no_args_is_help=True)
for sub_app, name in [
    (model_app, "model"),
    (worker_app, "worker"),
    (driver_app, "driver"),
    (verifier_app, "verifier"),
    (gateway_app, "gateway"),
    (store_app, "store"),
]:
    app.add_typer(sub_app, name=name)


@app.command()
def version() -> None:
    """Print the version of the `pm` tool."""
    typer.echo(f"pm {__version__}")


@model_app.command("create")
def model_create() -> None:
    """Pin a model spec and register the model on-chain."""
    not_landed("model create", "Worker")


@verifier_app.command("run")
def verifier_run() -> None:
    """Watch claims, replay them and challenge the false ones."""
    not_landed("verifier run", "Worker")


@gateway_app.command("run")
def gateway_run() -> None:
    """HTTP inference gateway that checks payments on-chain."""
    not_landed("gateway run", "inference")


@app.command()
def infer() -> None:
    """Pay for a completion on-chain and fetch it from a gateway."""
    not_landed("infer", "inference")


@app.command()
def claim() -> None:
    """Claim the inference revenue your shares have earned."""
    not_landed("claim", "inference")


@app.command()
def balance() -> None:
    """Show shares, percent of supply and claimable revenue."""
    not_landed("balance", "inference")


@app.command()
def status() -> None:
    """Show a model's stages, members, rounds, claims and revenue."""
    not_landed("status", "Worker")


@app.command()
def demo() -> None:
    """Run the whole network on this machine: deploy, train, verify, serve, claim."""
    stderr.print(
        "pm demo: the full local network lands with the demo issue. Once the contract, swarm,\n"
        "storage, worker and inference issues have landed it will: start anvil, deploy the contracts,\n"
        "create a model, start 3 stage workers, a driver, a verifier and a gateway on loopback,\n"
        "train a few rounds, finalize claims, pay for completions, have every holder claim, and\n"
        "print a summary. Nothing has been run."
    )
    raise typer.Exit(code=2)


def main() -> None:
    """Console-script entry point: user mistakes become one red line and a non-zero exit."""
    try:
        app()
    except UserError as error:
        stderr.print(f"[red]{error}[/red]")
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
