"""Joining the swarm: a node none of whose initial peers answers gives up in one line naming them
(the retry while they are down, and the join once one is back: test_verifier_onchain.py)."""

from __future__ import annotations

import asyncio

import pytest

from offchain.errors import UserError
from offchain.swarm.node import NetworkConfig, start_node

DEAD = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWBrtC14a6TMVuJ6P8oSYyPSj4oMwcmevPUVcfLkXAjx8G"


def test_initial_peers_that_never_answer_are_one_error_naming_them():
    with pytest.raises(UserError) as raised:
        asyncio.run(start_node(NetworkConfig(initial_peers=(DEAD,)), patience_s=1.0))
    assert str(raised.value) == (
        f"cannot join the swarm: none of the initial peers answered within 1s ({DEAD}); "
        "pass a live peer with --initial-peers"
    )
