"""Errors that reach the user as one clear line and a non-zero exit code, never a traceback."""

from __future__ import annotations

from typing import NoReturn


class UserError(Exception):
    """A mistake or condition the user can act on; `pm` prints the message alone and exits."""

    exit_code = 1


class NotLanded(UserError):
    """A planned command whose implementation is tracked by an open issue."""

    exit_code = 2

    def __init__(self, command: str, issue: str) -> None:
        super().__init__(f"pm {command}: not implemented yet (lands with the {issue} issue)")


def not_landed(command: str, issue: str) -> NoReturn:
    raise NotLanded(command, issue)
