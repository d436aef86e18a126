"""Let `brownie run scripts/deploy.py` work from a checkout whose path has a dot in it.

brownie 1.22 imports a script by the dotted form of its absolute path: it puts the filesystem root
on sys.path and imports `home.jane.doe.src.protocol.models.scripts.deploy` for
/home/jane.doe/src/protocol.models/scripts/deploy.py, which Python looks for as
/home/jane/doe/src/protocol/models/... and fails with ModuleNotFoundError. `ScriptPathFinder`
maps such a name back to the file: any run of consecutive name parts may be one path component
with dots in it. It is asked only after Python's own finders failed, only in a `brownie` process
and only while the filesystem root is on sys.path (what brownie's script runner does), so every
other import is untouched and brownie itself is not patched.

`make setup` runs `python -m offchain.brownie_paths`, which writes a one-line .pth file into the
venv's site-packages; Python runs it at start-up and it installs the finder in `brownie` processes.
This module must stay import-light: it is imported when every `brownie` command starts.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(os.path.abspath(os.sep))
PTH_NAME = "pm_brownie_paths.pth"
# One line, as site.py requires; an `import` line is executed at start-up. argv[0] is the
# `brownie` console script in a brownie process.
PTH_LINE = (
    "import sys; sys.argv[0].endswith('brownie') and "
    "__import__('offchain.brownie_paths').brownie_paths.install()\n"
)


def _paths(directory: Path, parts: Sequence[str]) -> Iterator[tuple[Path, bool]]:
    """Every path below `directory` that `parts` can name, each with True when it is the whole
    name (a folder or a .py file) and False when the last parts only begin a component (`jane`
    of `jane.doe`): a package must exist there so that the import can go on to the next part."""
    for k in range(1, len(parts) + 1):
        name, rest = ".".join(parts[:k]), parts[k:]
        if rest:
            if (directory / name).is_dir():
                yield from _paths(directory / name, rest)
            continue
        if (directory / name).is_dir():
            yield directory / name, True
        if (directory / f"{name}.py").is_file():
            yield directory / f"{name}.py", True
        if directory.is_dir() and any(entry.startswith(f"{name}.") for entry in os.listdir(directory)):
            yield directory / name, False


class ScriptPathFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder for the dotted names brownie makes of script paths (see the module doc)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parts = fullname.split(".")
        if len(parts) < 2 or str(ROOT) not in sys.path:
            return None
        found = list(_paths(ROOT, parts))
        for candidate, whole in found:
            if whole and candidate.suffix == ".py":
                return importlib.util.spec_from_file_location(fullname, candidate)
        if not found:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)  # a namespace package
        spec.submodule_search_locations = [str(candidate) for candidate, whole in found if whole]
        return spec


def install() -> None:
    """Append the finder to sys.meta_path (once), after Python's own finders."""
    if not any(isinstance(finder, ScriptPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(ScriptPathFinder())


def write_pth() -> Path:
    """Write the start-up hook into this interpreter's site-packages; idempotent."""
    pth = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    if not pth.exists() or pth.read_text() != PTH_LINE:
        pth.write_text(PTH_LINE)
    return pth


if __name__ == "__main__":
    print(f"brownie script-path hook: {write_pth()}")
