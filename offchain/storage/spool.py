"""Puts waiting for an unreachable Kubo daemon, kept on disk until it is back.

One file per put, named by its CID (`<cid>.pin` or `<cid>.nopin`), written atomically and
fsynced before the put returns, so a put that returned a CID survives a crash or a restart;
whichever process next reaches the daemon pushes it (pushing twice is harmless: same CID).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from offchain.durable import write_atomic


@dataclass(frozen=True)
class SpooledPut:
    """A put not yet on the daemon."""

    cid: str
    pin: bool
    path: Path


class Spool:
    """A folder of spooled puts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, cid: str, data: bytes | memoryview, pin: bool) -> None:
        """Keep `data` (whose CID is `cid`) until it can be pushed."""
        write_atomic(self.folder / f"{cid}.{'pin' if pin else 'nopin'}", data)

    def entries(self) -> list[SpooledPut]:
        """Spooled puts, oldest first."""
        found = [
            SpooledPut(path.stem, path.suffix == ".pin", path)
            for path in self.folder.iterdir()
            if path.suffix in (".pin", ".nopin") and not path.name.startswith(".")
        ]
        return sorted(found, key=lambda entry: entry.path.stat().st_mtime_ns)

    def find(self, cid: str) -> SpooledPut | None:
        """The spooled put of `cid`, if any."""
        return next((entry for entry in self.entries() if entry.cid == cid), None)
