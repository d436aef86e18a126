"""Retry RPC calls that failed for a passing reason (connection refused, 429, 5xx, timeouts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")
log = logging.getLogger(__name__)

TRANSIENT_HTTP_STATUS = {408, 425, 429, 500, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """True for failures a retry can cure: the node was unreachable, slow, or rate limiting."""
    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code in TRANSIENT_HTTP_STATUS
    return False


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    deadline_s: float = 60.0,
    first_delay_s: float = 0.25,
    max_delay_s: float = 5.0,
    log_level: int = logging.WARNING,
) -> T:
    """Run `call`, retrying transient failures with exponential backoff until `deadline_s` passes."""
    give_up_at = time.monotonic() + deadline_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except Exception as error:
            if not is_transient(error) or time.monotonic() + delay > give_up_at:
                raise
            log.log(log_level, "rpc %s failed (%s); retrying in %.2fs", what, type(error).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
