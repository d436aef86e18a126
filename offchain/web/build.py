"""`pm web build`: the app as a folder any static host can serve (the same files `pm web serve` serves).

The folder is written next to its destination and renamed into place, so an interrupted build
never leaves a half-written app; a previous build is replaced, any other non-empty folder refused.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from offchain.errors import UserError
from offchain.web.config import WebConfig
from offchain.web.site import app_files

MARKER = ".pm-web-build"


def build_site(config: WebConfig, out: Path) -> list[str]:
    """Write the app into `out`; returns the paths written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"--out {out} is not empty and was not written by pm web build: choose another one")
    files = app_files(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for path, file in files.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.body)
        (staging / MARKER).write_text("written by pm web build; replaced by the next build\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(files)
