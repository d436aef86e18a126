"""Storage failures, each a one-line message that names what went wrong (a CID, a URL, a file).

They derive from `UserError` so `pm store ...` prints them as one red line; daemons catch
`StorageError` and decide whether to retry.
"""

from __future__ import annotations

from offchain.errors import UserError


class StorageError(UserError):
    """Anything the storage layer refuses or cannot do."""


class InvalidCID(StorageError):
    """A string or byte sequence that is not a CID this store understands."""


class ContentUnavailable(StorageError):
    """Nothing this store can reach serves the content (a block not held, or not found within the
    Kubo daemon's fetch timeout): unlike an unreachable daemon, a fact about the content."""


class BlockNotFound(ContentUnavailable):
    """The store does not hold a block that a DAG needs."""

    def __init__(self, cid: str) -> None:
        super().__init__(f"block {cid} not found in the store")
        self.cid = cid


class BlockCorrupted(StorageError):
    """A block's bytes do not hash to its CID: never returned, always reported by CID."""

    def __init__(self, cid: str, where: str) -> None:
        super().__init__(f"block {cid} is corrupted ({where}): its bytes do not match its CID")
        self.cid = cid


class ContentTooLarge(StorageError):
    """A file longer than the caller's `max_size`, or a DAG that would expand past it (the same
    block linked over and over: a DAG bomb). Raised while fetching, before the bytes are held."""


class KuboError(StorageError):
    """The Kubo daemon refused a request or could not be reached."""


class KuboCommandError(KuboError):
    """Kubo ran the command and reported an error (HTTP 500 with a JSON `Message`)."""


class KuboUnreachable(KuboError):
    """No connection to the Kubo RPC (daemon down, wrong port, timeout)."""


class DecryptionError(StorageError):
    """A ciphertext that cannot be opened: wrong key, truncated, altered or not ours."""
