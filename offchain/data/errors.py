"""Errors of the data layer: one line each, naming the file, option or CID at fault."""

from __future__ import annotations

from offchain.errors import UserError


class DataInputError(UserError):
    """An input or option `pm data prepare` cannot use (nothing has been stored when it is raised)."""


class DatasetError(UserError):
    """A stored data set that cannot be used: a malformed manifest, or one that does not fit a spec."""
