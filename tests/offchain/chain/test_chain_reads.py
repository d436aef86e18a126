"""Chain reads cost what they must, counted at the RPC provider of a real anvil: a contract call
is one request (web3's validation middleware would first ask for the chain id, every time), the
gateway's requests that find its finalized rounds stale share one read of them (at a ticket
boundary of many streaming clients, each would otherwise read every stage), and a worker's claim
keeper with nothing of its own to do asks only for the block number until a block comes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from chain_testkit import REPO, TcpProxy, anvil_account
from web3.middleware import Web3Middleware

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.gateway import service
from offchain.gateway.api import ApiError
from offchain.gateway.served import ServedRequests
from offchain.gateway.service import Gateway, Pricing
from offchain.holder.wallet import asset_of
from offchain.model.generate import LocalPipeline
from offchain.model.spec import load_spec
from offchain.model.tokens import shipped_tokenizer
from offchain.proofs.rounds import PublishedRound
from offchain.storage.embedded import EmbeddedStore
from offchain.worker.claims import ClaimKeeper, ClaimPolicy
from offchain.worker.journal import ClaimJournal, RoundEntry

SPEC = REPO / "specs" / "tiny.json"


def counted(client: ChainClient) -> Counter:
    """The JSON-RPC methods `client` sends from now on, counted by a middleware around all of
    web3's (so a request one of them makes, as the validation middleware would, counts too)."""
    sent: Counter = Counter()

    class Counting(Web3Middleware):
        def wrap_make_request(self, make_request):
            def counting(method, params):
                sent[method] += 1
                return make_request(method, params)

            return counting

    client.w3.middleware_onion.inject(Counting, "counting", layer=0)
    return sent


def test_a_contract_call_is_one_rpc(chain):
    url, deployments = chain
    protocol = Protocol.load(ChainClient(url), deployments)
    sent = counted(protocol.client)
    protocol.client.call(protocol.ledger.functions.parameters())
    assert sent == Counter({"eth_call": 1})


def test_a_transaction_is_still_signed_for_the_chain_it_was_sent_to(chain):
    url, deployments = chain
    client = ChainClient(url, anvil_account(2))
    protocol = Protocol.load(client, deployments)
    receipt = client.transact(
        protocol.ledger.functions.stake(), value=protocol.ledger.functions.parameters().call()[8]
    )
    assert receipt["status"] == 1
    assert client.w3.eth.get_transaction(receipt["transactionHash"])["chainId"] == client.chain_id


def test_an_idle_claim_keeper_asks_only_for_the_block_number_until_a_block_or_a_round_comes(chain, tmp_path):
    """The worker daemon ticks its keeper every second; what a tick reads only changes in a block."""
    url, deployments = chain
    store = EmbeddedStore(tmp_path / "store")
    creator = Protocol.load(ChainClient(url, anvil_account(1)), deployments)
    created = create_model(
        creator, store, SPEC, shares_per_work_unit=10**18, revenue_asset="eth", operator=None
    )
    protocol = Protocol.load(ChainClient(url, anvil_account(3)), deployments)
    journal = ClaimJournal(tmp_path / "journal")
    keeper = ClaimKeeper(
        protocol, created.model.model_id, 0, journal, store, seed_digest=bytes(32), policy=ClaimPolicy()
    )
    sent = counted(protocol.client)
    keeper.tick()
    full = Counter(sent)
    assert full["eth_call"] >= 2  # the ledger's parameters and the lane's open claims, at least
    sent.clear()
    keeper.tick()
    assert sent == Counter({"eth_blockNumber": 1})  # no block since: nothing could have changed
    protocol.client.w3.provider.make_request("evm_mine", [])
    sent.clear()
    keeper.tick()
    assert sent == full  # a new block: the whole pass again
    # A round of this worker's waits to be claimed (its parent is not the lane's tip yet): every
    # tick looks again, block or not.
    waiting = PublishedRound(5, "QmCk5", bytes(32), "QmTr5", bytes(32), 8)
    journal.put_round(RoundEntry(waiting, b"\x01" * 32, b"\x02" * 32, 0, 0))
    for _ in range(2):
        sent.clear()
        keeper.tick()
        assert sent["eth_call"] >= 2 and [entry.round for entry in journal.unclaimed_rounds()] == [5]


@pytest.fixture
def proxy(chain) -> Iterator[TcpProxy]:
    """The gateway's way to the chain: taken down to cut it off."""
    url, _ = chain
    proxy = TcpProxy(int(url.rsplit(":", 1)[1]))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def gateway(chain, proxy, tmp_path) -> Gateway:
    url, deployments = chain
    creator = Protocol.load(ChainClient(url, anvil_account(1)), deployments)
    store = EmbeddedStore(tmp_path / "store")
    created = create_model(
        creator, store, SPEC, shares_per_work_unit=10**18, revenue_asset="eth", operator=None
    )
    protocol = Protocol.load(ChainClient(proxy.url, retry_deadline_s=0.1), deployments)
    model = protocol.model(created.model.model_id)
    spec = load_spec(SPEC)
    return Gateway(
        protocol=protocol,
        model=model,
        asset=asset_of(protocol, model),
        spec=spec,
        tokenizer=shipped_tokenizer(spec),
        pipeline=LocalPipeline(spec, [None] * spec.num_stages, [0] * spec.num_stages),
        served=ServedRequests(tmp_path / "gateway"),
        secret=b"\x01" * 32,
        pricing=Pricing(10**12),
        max_tokens=8,
    )


def test_requests_finding_the_rounds_stale_share_one_read(gateway, monkeypatch):
    stages = gateway.spec.num_stages
    sent = counted(gateway.protocol.client)
    monkeypatch.setattr(service, "ROUNDS_TTL_SECONDS", 0.5)

    async def requests_at_once() -> list[list[int]]:
        return await asyncio.gather(*(gateway.finalized_rounds() for _ in range(16)))

    assert asyncio.run(requests_at_once()) == [[0] * stages] * 16
    assert sent == Counter({"eth_call": stages})  # one read: checkpointOf of each stage, once
    asyncio.run(requests_at_once())
    assert sent == Counter({"eth_call": stages})  # fresh: no read at all
    asyncio.run(asyncio.sleep(0.6))
    assert asyncio.run(requests_at_once()) == [[0] * stages] * 16
    assert sent == Counter({"eth_call": 2 * stages})  # stale again: one more read, shared again


def test_a_failed_shared_read_fails_every_request_that_waited_for_it_and_the_next_one_reads_again(
    gateway, proxy
):
    stages = gateway.spec.num_stages
    sent = counted(gateway.protocol.client)

    async def requests_at_once() -> list:
        reads = (gateway.finalized_rounds() for _ in range(8))
        return await asyncio.gather(*reads, return_exceptions=True)

    proxy.stop()  # the chain is unreachable
    failures = asyncio.run(requests_at_once())
    assert all(isinstance(failure, ApiError) and failure.status == 503 for failure in failures)
    assert sent == Counter({"eth_call": 1})  # one read for all eight, failed at its first call
    proxy.start()
    assert asyncio.run(requests_at_once()) == [[0] * stages] * 8
    assert sent == Counter({"eth_call": 1 + stages})
