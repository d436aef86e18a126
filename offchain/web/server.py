"""`pm web serve`: the app's files from memory over HTTP, with its security headers on every answer.

Only the paths `app_files` lists exist (no file system lookups, so no path can escape the app);
anything else is a 404 and any method but GET/HEAD a 405, both with a JSON body. aiohttp's
run_app turns SIGTERM/SIGINT into a clean shutdown of the listener.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from offchain.errors import UserError
from offchain.web.config import WebConfig
from offchain.web.site import File, app_files, security_headers

logger = logging.getLogger(__name__)


def web_app(config: WebConfig) -> web.Application:
    files = app_files(config)
    headers = security_headers(config)

    async def serve(request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return _error(405, f"{request.method} is not allowed", headers)
        path = request.match_info["path"] or "index.html"
        file: File | None = files.get(path)
        if file is None:
            return _error(404, f"no such file: /{path}", headers)
        return web.Response(body=file.body, headers={**headers, "Content-Type": file.content_type})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", serve)
    return app


def _error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


def serve_web(config: WebConfig, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    app = web_app(config)
    url = f"http://{host}:{port}/"

    def announce(_: str) -> None:
        logger.info("web app for chain %d listening on %s", config.chainId, url)

    try:
        web.run_app(app, host=host, port=port, print=announce, access_log=None)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
