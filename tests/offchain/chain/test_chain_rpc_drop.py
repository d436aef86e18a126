"""Transient RPC failures (endpoint down, rate limited) are retried; real errors are not."""

import threading
import time
from urllib.parse import urlparse

import pytest
import requests
from chain_testkit import TcpProxy
from eth_account import Account

from offchain.chain.client import ChainClient
from offchain.chain.retry import with_retries


def test_transaction_survives_the_rpc_endpoint_going_down_and_back(client, token):
    proxy = TcpProxy(urlparse(client.rpc_url).port)
    proxy.start()
    try:
        via_proxy = ChainClient(proxy.url, client.account, retry_deadline_s=20)
        receiver = Account.create().address
        via_proxy.transact(token.functions.transfer(receiver, 1))
        proxy.stop()
        threading.Timer(1.5, proxy.start).start()
        started = time.monotonic()
        via_proxy.transact(token.functions.transfer(receiver, 2))
        assert time.monotonic() - started >= 1.4  # it really waited for the endpoint to return
        assert token.functions.balanceOf(receiver).call() == 3
    finally:
        proxy.stop()


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(response=response)


def test_rate_limit_is_retried_with_backoff():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise http_error(429)
        return "ok"

    assert with_retries(flaky, what="test", first_delay_s=0.01) == "ok"
    assert len(attempts) == 3


def test_client_errors_are_not_retried():
    attempts = []

    def forbidden():
        attempts.append(1)
        raise http_error(403)

    with pytest.raises(requests.HTTPError):
        with_retries(forbidden, what="test", first_delay_s=0.01)
    assert len(attempts) == 1


def test_retries_stop_at_the_deadline():
    def down():
        raise requests.ConnectionError("refused")

    with pytest.raises(requests.ConnectionError):
        with_retries(down, what="test", deadline_s=0.3, first_delay_s=0.05)
