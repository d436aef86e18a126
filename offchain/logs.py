"""Log output for every `pm` daemon: one format, set up in one place."""

from __future__ import annotations

import logging
import sys

from rich.console import Console


def configure_logging() -> None:
    """Rich log lines on a terminal; plain `time level logger message` lines otherwise (for log files)."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
