"""`pm worker run` and `pm driver run`: the training swarm's processes."""

import typer

from offchain.errors import not_landed

worker_app = typer.Typer(help="Compute provider: train one pipeline stage.", no_args_is_help=True)
driver_app = typer.Typer(help="Stream micro-batches through the stages.", no_args_is_help=True)


@worker_app.command("run")
def worker_run() -> None:
    """Serve one stage, train, store checkpoints and submit claims."""
    not_landed("worker run", "swarm training")


@driver_app.command("run")
def driver_run() -> None:
    """Stream micro-batches through every stage and back."""
    not_landed("driver run", "swarm training")
