"""Make the pinned Solidity compiler available to py-solc-x (and so to brownie).

A native solc is preferred wherever py-solc-x can download one. Where it cannot (machines
without internet beyond the package registries), this installs a small wrapper that serves
the same compiler version from solc-js (node_modules/solc) through tools/solc/solc-adapter.js,
and imports it with ``solcx.import_installed_solc()``. Same compiler, same bytecode.

Run by ``make setup``; safe to re-run. ``PM_SOLC=native|solcjs|auto`` forces a path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import solcx
from solcx.install import get_solcx_install_folder

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "tools" / "solc" / "solc-adapter.js"
MARKER = "# protocol-models solc-js adapter"


def pinned_version() -> str:
    """The one solc version, read from package.json and checked against brownie-config.yaml."""
    npm_version = json.loads((REPO / "package.json").read_text())["dependencies"]["solc"]
    config = (REPO / "brownie-config.yaml").read_text()
    match = re.search(r"^\s+version:\s*([0-9.]+)\s*$", config, re.MULTILINE)
    if match is None or match.group(1) != npm_version:
        found = match.group(1) if match else "none"
        sys.exit(f"install_solc: package.json pins solc {npm_version} but brownie-config.yaml pins {found}")
    return npm_version


def try_native(version: str) -> bool:
    try:
        solcx.install_solc(version)
    except Exception as error:  # noqa: BLE001 - any failure means "no native solc here"
        print(f"install_solc: no native solc {version} ({type(error).__name__}); using solc-js")
        return False
    return True


def installed_path(version: str) -> Path:
    return get_solcx_install_folder() / f"solc-v{version}"


def npm_closure(package: str, seen: set[str] | None = None) -> set[str]:
    """The package and every package it depends on, as installed in node_modules."""
    seen = set() if seen is None else seen
    if package not in seen:
        seen.add(package)
        manifest = json.loads((REPO / "node_modules" / package / "package.json").read_text())
        for dependency in manifest.get("dependencies", {}):
            npm_closure(dependency, seen)
    return seen


def install_solcjs_copy(version: str) -> Path:
    """Copy the adapter and solc-js (with its dependencies) next to the installed compilers,
    so the installed `solc` works from any checkout and outlives this one."""
    home = get_solcx_install_folder() / f"solcjs-v{version}"
    staging = home.with_name(home.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for package in npm_closure("solc"):
        shutil.copytree(REPO / "node_modules" / package, staging / "node_modules" / package, symlinks=True)
    shutil.copy(ADAPTER, staging / ADAPTER.name)
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return home / ADAPTER.name


def install_adapter(version: str) -> None:
    if not (REPO / "node_modules" / "solc").is_dir():
        sys.exit("install_solc: node_modules/solc is missing; run npm ci first")
    adapter = install_solcjs_copy(version)
    wrapper_text = f'#!/bin/sh\n{MARKER}\nexec node "{adapter}" "$@"\n'
    target = installed_path(version)
    if target.exists():
        current = target.read_bytes()
        if current == wrapper_text.encode():
            return
        if MARKER.encode() not in current:
            return  # a native solc of this version is already installed: keep it
        target.unlink()  # an adapter from another checkout: replace it with ours
    with tempfile.TemporaryDirectory() as folder:
        wrapper = Path(folder) / "solc"
        wrapper.write_text(wrapper_text)
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"
        solcx.import_installed_solc()
    if not target.exists():
        sys.exit(f"install_solc: importing the solc-js adapter as solc {version} failed")


def main() -> None:
    version = pinned_version()
    mode = os.environ.get("PM_SOLC", "auto")
    if mode not in {"auto", "native", "solcjs"}:
        sys.exit(f"install_solc: PM_SOLC must be auto, native or solcjs, not {mode!r}")
    target = installed_path(version)
    is_adapter = target.exists() and MARKER.encode() in target.read_bytes()
    if target.exists() and not is_adapter:
        print(f"install_solc: native solc {version} at {target}")
        return
    if is_adapter and mode == "native":
        target.unlink()  # py-solc-x treats any installed file as "already installed"
        is_adapter = False
    if not is_adapter and mode != "solcjs" and try_native(version):
        print(f"install_solc: native solc {version} at {target}")
        return
    if mode == "native":
        sys.exit(f"install_solc: PM_SOLC=native but no native solc {version} could be installed")
    install_adapter(version)
    print(f"install_solc: solc {solcx.wrapper.get_solc_version(target)} (solc-js adapter) at {target}")


if __name__ == "__main__":
    main()
