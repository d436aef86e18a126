"""Event polling resumes from its persisted cursor: nothing missed, nothing delivered twice."""

from eth_account import Account

from offchain.chain.events import EventPoller


def transfer_values(events):
    return [event["args"]["value"] for event in events]


def drain(poller):
    seen = []
    while batch := poller.poll():
        for event in batch:
            seen.append(event)
            poller.done(event)
    return seen


def test_restarted_poller_resumes_after_the_last_handled_event(client, token, tmp_path):
    cursor = tmp_path / "cursor.json"
    receiver = Account.create().address
    for amount in (1, 2, 3):
        client.transact(token.functions.transfer(receiver, amount))

    first = EventPoller(client, token, ["Transfer"], cursor, max_blocks_per_query=1)
    batch = first.poll()
    while not batch:
        batch = first.poll()
    first.done(batch[0])  # the daemon handled one event (the mint), then "crashed"

    for amount in (4, 5):
        client.transact(token.functions.transfer(receiver, amount))
    restarted = EventPoller(client, token, ["Transfer"], cursor, max_blocks_per_query=1)
    assert transfer_values(drain(restarted)) == [1, 2, 3, 4, 5]
    assert drain(EventPoller(client, token, ["Transfer"], cursor)) == []


def test_several_events_in_one_block_keep_their_order(client, token, tmp_path):
    receiver = Account.create().address
    client.w3.provider.make_request("evm_setAutomine", [False])
    hashes = [client.submit(token.functions.transfer(receiver, amount)) for amount in (7, 8, 9)]
    client.w3.provider.make_request("evm_mine", [])
    client.w3.provider.make_request("evm_setAutomine", [True])
    blocks = {client.wait(tx_hash)["blockNumber"] for tx_hash in hashes}
    assert len(blocks) == 1
    poller = EventPoller(client, token, ["Transfer"], tmp_path / "cursor.json")
    events = drain(poller)
    assert transfer_values(events)[-3:] == [7, 8, 9]
