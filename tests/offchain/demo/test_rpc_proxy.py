"""The demo's RPC proxy on a real anvil: JSON-RPC through it, unreachable while cut, and back."""

from __future__ import annotations

import time

import httpx
import pytest

from offchain.demo.anvil import start_anvil
from offchain.demo.rpc_proxy import RpcProxy

CHAIN_ID = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}


def test_the_proxy_pipes_json_rpc_is_unreachable_while_cut_and_comes_back(tmp_path):
    with start_anvil(log=tmp_path / "anvil.log") as anvil:
        proxy = RpcProxy(anvil.port).start()
        try:
            with httpx.Client(timeout=5) as http:  # one kept-alive connection, reset by the cut
                assert http.post(proxy.url, json=CHAIN_ID).json()["result"] == "0x7a69"
                proxy.cut(1.5)
                time.sleep(0.2)
                with pytest.raises(httpx.TransportError):
                    http.post(proxy.url, json=CHAIN_ID)
                with pytest.raises(httpx.TransportError):
                    httpx.post(proxy.url, json=CHAIN_ID, timeout=5)
                time.sleep(1.5)
                assert http.post(proxy.url, json=CHAIN_ID).json()["result"] == "0x7a69"
        finally:
            proxy.close()
