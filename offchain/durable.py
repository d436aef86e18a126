"""Durable file writes: a file is either absent or complete, never half-written and visible."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or directory's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | memoryview, *, mode: int = 0o666) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.

    `mode` (less the umask) is the file's from its creation: a secret written with 0o600 is never
    readable by anyone else, not even for a moment."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_path(path.parent)
