"""Every file the web app is made of, the same for `pm web serve` and `pm web build`.

The page's own files come from static/; the libraries come from node_modules through a fixed
allowlist of pinned npm files (package.json / package-lock.json), never from a CDN:

- ethers 6 (`dist/ethers.min.js`, one self-contained ES module): ABI coding, JSON-RPC reads,
  units. viem has no single-file browser build: its modules import other packages by bare name,
  which needs a bundler or an inline import map, and `script-src 'self'` forbids inline scripts.
- htm + preact (`htm/preact/standalone.module.js`, 13 KB, both in one module): components and
  hooks written as tagged templates, so there is no JSX and no build step; React needs both.
- uPlot (`dist/uPlot.esm.js`, 51 KB minified): time-series charts on a canvas; Chart.js 4 is
  about four times larger. uPlot styles its elements through the CSSOM (no style attributes,
  no innerHTML), which the strict CSP allows.

index.html carries the Content-Security-Policy as a meta tag too, so a static host that sets no
headers still serves the page with `script-src 'self'`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from offchain.chain.artifacts import load_artifact
from offchain.errors import UserError
from offchain.paths import REPO
from offchain.web.config import WebConfig

STATIC = Path(__file__).resolve().parent / "static"
NODE_MODULES = REPO / "node_modules"
VENDOR = {  # served path -> file in node_modules
    "vendor/ethers.min.js": "ethers/dist/ethers.min.js",
    "vendor/preact-htm.js": "htm/preact/standalone.module.js",
    "vendor/uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "vendor/uPlot.min.css": "uplot/dist/uPlot.min.css",
}
ABIS = ("ModelRegistry", "ModelShares", "RevenueRouter", "WorkLedger", "IERC20Metadata")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
CSP_PLACEHOLDER = "{{CSP}}"


@dataclass(frozen=True)
class File:
    body: bytes
    content_type: str


def content_security_policy(config: WebConfig) -> str:
    """Scripts and styles only from the app's origin; network only to it, the RPC and the gateways;
    images also as data: URLs (the icons wallets announce over EIP-6963). This is the meta tag's
    policy; the served header adds frame-ancestors, which browsers ignore in a meta tag."""
    connect = " ".join(["'self'", *config.origins()])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'"
    )


def security_headers(config: WebConfig) -> dict[str, str]:
    return {
        "Content-Security-Policy": f"{content_security_policy(config)}; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def _file(path: Path) -> File:
    return File(path.read_bytes(), CONTENT_TYPES[path.suffix])


@cache
def _abi_document() -> bytes:
    return json.dumps({name: load_artifact(name).abi for name in ABIS}, sort_keys=True).encode()


def app_files(config: WebConfig) -> dict[str, File]:
    """URL path (no leading slash) -> file; nothing outside this mapping is ever served."""
    missing = [name for name in VENDOR.values() if not (NODE_MODULES / name).is_file()]
    if missing:
        raise UserError(f"{NODE_MODULES / missing[0]} is missing: run `make setup` (npm ci)")
    files = {
        path.relative_to(STATIC).as_posix(): _file(path)
        for path in sorted(STATIC.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES
    }
    index = files["index.html"].body.decode()
    if CSP_PLACEHOLDER not in index:
        raise RuntimeError("static/index.html lost its CSP placeholder")
    index = index.replace(CSP_PLACEHOLDER, html.escape(content_security_policy(config)))
    files["index.html"] = File(index.encode(), CONTENT_TYPES[".html"])
    files.update({served: _file(NODE_MODULES / source) for served, source in VENDOR.items()})
    files["config.json"] = File(config.model_dump_json(indent=2).encode(), CONTENT_TYPES[".json"])
    files["abi.json"] = File(_abi_document(), CONTENT_TYPES[".json"])
    return files
