"""`pm store ...`: content-addressed storage commands (embedded store or Kubo)."""

import typer

from offchain.errors import not_landed

store_app = typer.Typer(help="Content-addressed storage (embedded store or Kubo).", no_args_is_help=True)


@store_app.command("put")
def store_put() -> None:
    """Store a file and print its CID."""
    not_landed("store put", "IPFS storage")


@store_app.command("get")
def store_get() -> None:
    """Fetch a CID (verified) into a file."""
    not_landed("store get", "IPFS storage")
