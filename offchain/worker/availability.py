"""Whether validators can fetch a claim's files yet.

With a Kubo daemon configured, a put made while the daemon is down is kept in a local spool
(offchain/storage/spool.py) and pushed when it is back: the CID is right, but nobody else can
fetch the bytes. A claim naming such a CID could not be checked, so it waits until its files left
the spool. The embedded store is a folder every local process reads: nothing waits there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from offchain.storage.errors import KuboUnreachable
from offchain.storage.kubo import KuboStore
from offchain.storage.store import Store


def unfetchable(store: Store, cids: Iterable[str]) -> list[str]:
    """The CIDs among `cids` still only in the local spool, after one attempt to push the spool."""
    if not isinstance(store, KuboStore) or store.spool is None:
        return []
    with contextlib.suppress(KuboUnreachable):
        store.drain()
    return [cid for cid in cids if store.spool.find(cid) is not None]
