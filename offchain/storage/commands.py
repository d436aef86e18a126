"""`pm store ...`: content-addressed storage from the shell, on the embedded store or a Kubo daemon.

Every command takes `--store DIR` (the embedded store's folder, and the Kubo spool's parent;
env PM_STORE, default .pm/store), `--ipfs-api URL` (a Kubo RPC API such as
http://127.0.0.1:5001; env PM_IPFS_API; unset = embedded store) and `--json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from offchain.errors import UserError
from offchain.options import DEFAULT_STORE, IpfsApi, JsonOut, StoreDir

if TYPE_CHECKING:
    from offchain.storage.store import Store

store_app = typer.Typer(help="Content-addressed storage (embedded store or Kubo).", no_args_is_help=True)

Cid = Annotated[str, typer.Argument(help="A CID (Qm... or bafy...).")]


def _open(ipfs_api: str | None, store: Path) -> Store:
    from offchain.storage.store import open_store

    return open_store(ipfs_api, store)


def _backend(ipfs_api: str | None) -> str:
    return "kubo" if ipfs_api else "embedded"


def _emit(as_json: bool, record: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(record) if as_json else text)


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def _write_output(path: Path, write: Any) -> int:
    try:
        with open(path, "wb") as out:
            return write(out)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from None


@store_app.command("put")
def store_put(
    file: Annotated[Path, typer.Argument(help="File to store.")],
    no_pin: Annotated[bool, typer.Option("--no-pin", help="Do not pin (the next gc may drop it).")] = False,
    store: StoreDir = DEFAULT_STORE,
    ipfs_api: IpfsApi = None,
    as_json: JsonOut = False,
) -> None:
    """Store a file and print its CID (the one `ipfs add` prints for it)."""
    data = _read_input(file)
    backend = _open(ipfs_api, store)
    cid = backend.put(data, pin=not no_pin)
    spool = getattr(backend, "spool", None)
    spooled = bool(spool and spool.find(cid))
    note = (
        f"\n(daemon unreachable: spooled in {spool.folder}; pushed on the next call that reaches it)"
        if spooled
        else ""
    )
    _emit(
        as_json,
        {"cid": cid, "size": len(data), "backend": _backend(ipfs_api), "spooled": spooled},
        cid + note,
    )


@store_app.command("get")
def store_get(
    cid: Cid,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the file.")],
    store: StoreDir = DEFAULT_STORE,
    ipfs_api: IpfsApi = None,
    as_json: JsonOut = False,
) -> None:
    """Fetch a CID (every block verified) into a file."""
    data = _open(ipfs_api, store).get(cid)
    _write_output(output, lambda out: out.write(data))
    _emit(
        as_json,
        {"cid": cid, "size": len(data), "path": str(output)},
        f"{cid} -> {output} ({len(data)} bytes)",
    )


@store_app.command("export")
def store_export(
    cid: Cid,
    output: Annotated[Path, typer.Option("-o", "--output", help="CAR file to write.")],
    store: StoreDir = DEFAULT_STORE,
    ipfs_api: IpfsApi = None,
    as_json: JsonOut = False,
) -> None:
    """Write a CID's DAG as a CAR v1 file (`ipfs dag import` reads it)."""
    backend = _open(ipfs_api, store)
    size = _write_output(output, lambda out: backend.export_car(cid, out))
    _emit(as_json, {"cid": cid, "size": size, "path": str(output)}, f"{cid} -> {output} ({size} bytes)")


@store_app.command("import")
def store_import(
    car: Annotated[Path, typer.Argument(help="CAR v1 file (e.g. from `ipfs dag export`).")],
    store: StoreDir = DEFAULT_STORE,
    ipfs_api: IpfsApi = None,
    as_json: JsonOut = False,
) -> None:
    """Import a CAR v1 file (blocks verified) and pin its roots."""
    if not car.is_file():
        raise UserError(f"no such file: {car}")
    backend = _open(ipfs_api, store)
    with open(car, "rb") as src:
        roots = backend.import_car(src)
    _emit(as_json, {"roots": roots}, "\n".join(roots))


@store_app.command("pins")
def store_pins(store: StoreDir = DEFAULT_STORE, ipfs_api: IpfsApi = None, as_json: JsonOut = False) -> None:
    """List the recursively pinned CIDs."""
    pins = _open(ipfs_api, store).pins()
    _emit(as_json, {"pins": pins}, "\n".join(pins))


@store_app.command("pin")
def store_pin(
    cid: Cid, store: StoreDir = DEFAULT_STORE, ipfs_api: IpfsApi = None, as_json: JsonOut = False
) -> None:
    """Pin a CID recursively (all of its blocks must be present)."""
    _open(ipfs_api, store).pin(cid)
    _emit(as_json, {"pinned": cid}, f"pinned {cid}")


@store_app.command("unpin")
def store_unpin(
    cid: Cid, store: StoreDir = DEFAULT_STORE, ipfs_api: IpfsApi = None, as_json: JsonOut = False
) -> None:
    """Remove a recursive pin (the embedded store frees the blocks at the next gc)."""
    _open(ipfs_api, store).unpin(cid)
    _emit(as_json, {"unpinned": cid}, f"unpinned {cid}")


@store_app.command("gc")
def store_gc(store: StoreDir = DEFAULT_STORE, as_json: JsonOut = False) -> None:
    """Embedded store: delete blocks no pin reaches."""
    from offchain.storage.embedded import EmbeddedStore

    result = EmbeddedStore(store).gc()
    record = {"blocks_removed": result.blocks_removed, "bytes_freed": result.bytes_freed}
    _emit(as_json, record, f"removed {result.blocks_removed} blocks, freed {result.bytes_freed} bytes")


@store_app.command("drain")
def store_drain(
    ipfs_api: Annotated[str, typer.Option("--ipfs-api", envvar="PM_IPFS_API", help="Kubo RPC API URL.")],
    store: StoreDir = DEFAULT_STORE,
    as_json: JsonOut = False,
) -> None:
    """Kubo: push the puts spooled while the daemon was unreachable."""
    from offchain.storage.kubo import KuboStore

    pushed = KuboStore(ipfs_api, spool_dir=store / "spool").drain()
    _emit(as_json, {"pushed": pushed}, f"pushed {pushed} spooled puts")
