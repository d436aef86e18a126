"""A real round of the tiny model, published (encrypted checkpoint + trace in the store, a claim
manifest naming them) and claimed by three stage workers on anvil: shares minted = work units x
rate, checkpointOf advances, and a fresh reader finds the round through the manifest the chain's
roundsRoot commits to, decrypts each checkpoint to the on-chain digest and replays the trace."""

import pytest
from chain_testkit import REPO, anvil_account, join_stage, submit_and_finalize

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.chain.status import cid_of
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.trainer import StageTrainer
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.replay import replay_round
from offchain.proofs.rounds import (
    CheckpointMismatch,
    claim_input,
    fetch_checkpoint,
    fetch_manifest,
    fetch_trace,
    publish_manifest,
    publish_round,
)
from offchain.proofs.signing import sign_message
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import DecryptionError

ETHER = 10**18
DRIVER = anvil_account(9)


@pytest.fixture
def model(chain, tmp_path):
    url, deployments = chain
    creator = ChainClient(url, anvil_account(1))
    protocol = Protocol.load(creator, deployments)
    store = EmbeddedStore(tmp_path / "store")
    spec_path = REPO / "specs" / "tiny.json"
    created = create_model(
        protocol, store, spec_path, shares_per_work_unit=ETHER, revenue_asset="eth", operator=None
    )
    workers = [ChainClient(url, anvil_account(2 + stage)) for stage in range(3)]
    return protocol, store, load_spec(spec_path), created.model.model_id, workers


def signer_for(workers):
    """Each message is signed by its real sender: the driver into stage 0 and for targets, the
    left neighbour for activations, the right neighbour for gradients."""

    def sign(header, payload):
        if header.direction == "forward":
            account = DRIVER if header.stage == 0 else workers[header.stage - 1].account
        else:
            account = workers[header.stage + 1].account
        return sign_message(account.key, header, payload), account.address

    return sign


def test_published_round_is_claimed_finalized_and_verifiable(model, tmp_path):
    protocol, store, spec, model_id, workers = model
    ledgers = [join_stage(protocol, worker, model_id, stage) for stage, worker in enumerate(workers)]
    parents = [StageTrainer(spec, stage, model_id=model_id).state_bytes() for stage in range(3)]
    result = train_single_process(spec, 1, first_round=1, model_id=model_id, sign=signer_for(workers))
    keys = [StageKey.generate(model_id, stage) for stage in range(3)]

    published = [
        publish_round(store, keys[stage], result.states[stage], result.traces[stage]) for stage in range(3)
    ]
    manifests = [ClaimManifest(model_id, stage, None, (published[stage].record(1),)) for stage in range(3)]
    manifest_cids = [publish_manifest(store, manifest) for manifest in manifests]
    for stage, worker in enumerate(workers):
        submit_and_finalize(ledgers[stage], worker, claim_input(manifests[stage], manifest_cids[stage]))

    shares = protocol.shares(protocol.model(model_id))
    units = spec.round_steps * spec.micro_batches
    for stage, worker in enumerate(workers):
        assert published[stage].work_units == units
        assert shares.functions.balanceOf(worker.address).call() == units * ETHER

    reader = EmbeddedStore(tmp_path / "store")  # a fresh handle: nothing cached from the writer
    for stage in range(3):
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        assert (cid_of(cid), round_) == (published[stage].checkpoint_cid, 1)
        state = fetch_checkpoint(reader, keys[stage], cid_of(cid), digest)
        assert state == result.states[stage]
        (submitted,) = protocol.ledger.events.ClaimSubmitted().get_logs(
            argument_filters={"modelId": model_id, "worker": workers[stage].address}, from_block=0
        )
        args = submitted["args"]
        manifest = fetch_manifest(reader, cid_of(args["manifestCID"]), args["roundsRoot"])
        assert manifest == manifests[stage]
        (record,) = manifest.rounds
        trace = fetch_trace(reader, keys[stage], record.trace_cid, record.trace_root)
        report = replay_round(spec, stage, parents[stage], trace)
        assert report.ok, report

    with pytest.raises(CheckpointMismatch, match="the chain says"):
        fetch_checkpoint(reader, keys[0], published[0].checkpoint_cid, b"\x00" * 32)
    with pytest.raises(DecryptionError):
        fetch_checkpoint(reader, keys[1], published[0].checkpoint_cid, published[0].checkpoint_digest)
    assert store.get(published[0].checkpoint_cid) != result.states[0]  # at rest it is ciphertext
    with pytest.raises(CheckpointMismatch, match="rounds root"):
        fetch_manifest(reader, manifest_cids[0], b"\x00" * 32)
