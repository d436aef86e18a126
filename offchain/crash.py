"""TEST ONLY crash hooks: `PM_TEST_CRASH_AT=<name>[#n]` makes a daemon die the n-th time (default:
the first) it reaches `crash_point(name)`, as under `kill -9` (exit 137, no cleanup), so crash tests
stop a process at an exact moment instead of racing a kill against it.

Points: the worker's `after-store` (round stored and journaled, not in a claim), `after-prepare`
(claim journaled with its manifest, not sent), `after-send` (submitClaim sent, its hash and receipt
not recorded); the verifier's `mid-replay` (a replay journaled as started, not finished); the
gateway's `mid-request` (a paid request claimed as being served, its answer not computed).
"""

from __future__ import annotations

import logging
import os
from collections import Counter

CRASH_ENV = "PM_TEST_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get(CRASH_ENV, "")
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        logging.getLogger(__name__).warning("%s=%s: the process dies here (test hook)", CRASH_ENV, wanted)
        logging.shutdown()
        os._exit(137)
