"""ChainClient against a real anvil: nonces, fees, reverts decoded by custom error name."""

import pytest
from chain_testkit import anvil_account, free_port
from eth_account import Account

from offchain.chain.client import ChainClient, ContractRevert, FeePolicy
from offchain.errors import UserError


def test_several_transactions_in_flight_get_consecutive_nonces(client, token):
    receiver = Account.create().address
    hashes = [client.submit(token.functions.transfer(receiver, amount)) for amount in (1, 2, 3, 4, 5)]
    receipts = [client.wait(tx_hash) for tx_hash in hashes]
    assert all(receipt["status"] == 1 for receipt in receipts)
    nonces = [client.w3.eth.get_transaction(tx_hash)["nonce"] for tx_hash in hashes]
    assert nonces == list(range(nonces[0], nonces[0] + 5))
    assert token.functions.balanceOf(receiver).call() == 15


def test_revert_is_decoded_to_the_custom_error_before_sending(client, token):
    poor = ChainClient(client.rpc_url, anvil_account(1))
    nonce_before = client.w3.eth.get_transaction_count(poor.address)
    with pytest.raises(ContractRevert) as caught:
        poor.transact(token.functions.transfer(client.address, 7), action="transfer")
    assert caught.value.error.name == "ERC20InsufficientBalance"
    assert caught.value.error.args == (poor.address, 0, 7)
    assert str(caught.value).startswith("transfer reverted: ERC20InsufficientBalance(")
    assert client.w3.eth.get_transaction_count(poor.address) == nonce_before  # nothing was sent


def test_mined_revert_is_decoded_from_the_receipt(client, token):
    poor = ChainClient(client.rpc_url, anvil_account(1))
    tx_hash = poor.submit(token.functions.transfer(client.address, 9), gas=100_000)
    with pytest.raises(ContractRevert) as caught:
        poor.wait(tx_hash, action="transfer")
    assert caught.value.error.name == "ERC20InsufficientBalance"
    assert client.w3.eth.get_transaction_receipt(tx_hash)["status"] == 0


def test_revert_caused_by_an_earlier_transaction_of_the_same_block_is_decoded(client, token):
    """Two spends of the same balance mined in one block: the second fails only because of the
    first, so its replay against the state before the block would not revert."""
    spender = ChainClient(client.rpc_url, anvil_account(1))
    client.transact(token.functions.transfer(spender.address, 5))
    client.w3.provider.make_request("evm_setAutomine", [False])
    try:
        first = spender.submit(token.functions.transfer(client.address, 5), gas=100_000)
        second = spender.submit(token.functions.transfer(client.address, 5), gas=100_000)
        client.w3.provider.make_request("evm_mine", [])
    finally:
        client.w3.provider.make_request("evm_setAutomine", [True])
    spender.wait(first)
    with pytest.raises(ContractRevert) as caught:
        spender.wait(second, action="transfer")
    assert caught.value.error.name == "ERC20InsufficientBalance"
    receipts = [client.w3.eth.get_transaction_receipt(tx) for tx in (first, second)]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]


def test_fees_are_eip1559_and_capped(client, token):
    fields = client.fee_fields()
    assert 0 < fields["maxPriorityFeePerGas"] <= fields["maxFeePerGas"] <= client.fees.max_fee_cap_wei
    capped = ChainClient(client.rpc_url, client.account, fees=FeePolicy(max_fee_cap_wei=1))
    with pytest.raises(UserError, match="exceeds the fee cap"):
        capped.transact(token.functions.transfer(client.address, 1))


def test_unreachable_rpc_is_one_clear_error(compiled):
    with pytest.raises(UserError, match="cannot reach the RPC URL"):
        ChainClient(f"http://127.0.0.1:{free_port()}", retry_deadline_s=1)


def test_http_server_that_is_not_a_node_is_refused(compiled, tmp_path):
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(UserError, match="is not an Ethereum JSON-RPC node"):
            ChainClient(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
