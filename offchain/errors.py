"""Errors that reach the user as one clear line and a non-zero exit code, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake or condition the user can act on; `pm` prints the message alone and exits."""

    exit_code = 1
