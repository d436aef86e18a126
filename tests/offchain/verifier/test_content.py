"""A claim's content under hard limits: every malformed, oversized or undecodable input is Refused with
a reason naming what is wrong (never another exception); content nobody serves is told apart (the
store's ContentUnavailable passes through); honest content passes."""

import dataclasses
import json
import re
import struct
from pathlib import Path

import pytest
from rounds_kit import make_signer, reframed, throwaway

from offchain.chain.models import MAX_SPEC_BYTES, pin_spec
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import claim_input, publish_manifest, publish_round
from offchain.storage.crypto import StageKey, encrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.errors import ContentUnavailable
from offchain.storage.unixfs import KUBO_DEFAULT
from offchain.verifier.check import SubmittedClaim
from offchain.verifier.content import (
    Refused,
    decode_trace,
    open_checkpoint,
    open_manifest,
    open_spec,
    open_trace,
    stage_limits,
)
from offchain.verifier.limits import MAX_LAYERS, StageLimits
from tests.offchain.storage.bombs import dag_bomb

SPEC_PATH = Path(__file__).resolve().parents[3] / "specs" / "tiny.json"
SPEC = load_spec(SPEC_PATH)
LIMITS = StageLimits.of(SPEC, 1)
KEY = StageKey(0, 1, b"\x07" * 32)


@pytest.fixture(scope="module")
def honest():
    """Stage 1's round 0: (state, trace) with real signatures."""
    result = train_single_process(
        SPEC, 1, sign=make_signer(throwaway("driver"), [throwaway(f"s{s}") for s in range(3)])
    )
    return result.states[1], result.traces[1]


@pytest.fixture
def store(tmp_path):
    return EmbeddedStore(tmp_path / "store")


def test_the_honest_round_passes(store, honest):
    state, trace = honest
    published = publish_round(store, KEY, state, trace)
    opened = open_trace(store, KEY, published.trace_cid, published.trace_root, LIMITS)
    assert opened.to_bytes() == trace.to_bytes()
    digest = published.checkpoint_digest
    assert open_checkpoint(store, KEY, published.checkpoint_cid, digest, LIMITS) == state


def _drop(key):
    return lambda document: document.pop(key)


def _set(path, value):
    def change(document):
        *parents, last = path
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_drop("threads"), "threads: Field required"),
        (
            _set(("records", 0, "micro_batches", 0, "bonus"), 1),
            "records.0.micro_batches.0.bonus: unknown field",
        ),
        (_set(("comment",), "hi"), "comment: unknown field"),
        (_set(("round",), "0"), "round: Input should be a valid integer"),
        (_set(("records", 1, "state_after"), "not a digest"), "records.1.state_after: String should match"),
        (_set(("records",), []), "records: List should have at least 1 item"),
        (
            _set(("messages", 0, "header", "direction"), "sideways"),
            "messages.0.header.direction: Input should be",
        ),
        (_set(("records", 0, "micro_batches", 0, "inputs", "weights"), "00" * 32), "inputs.weights"),
        (
            _set(("records", 0, "micro_batches", 0, "loss"), float("nan")),
            "loss: Input should be a finite number",
        ),
    ],
)
def test_a_malformed_trace_is_refused_with_what_is_wrong(honest, change, reason):
    blob = reframed(honest[1].to_bytes(), change)
    with pytest.raises(Refused, match=reason):
        decode_trace(blob, LIMITS)


def test_framing_and_payloads_are_checked(honest):
    blob = honest[1].to_bytes()
    cases = {
        "not a protocol-models trace": b"PMTRACE2" + blob[8:],
        "the trace has": blob[:8] + struct.pack(">Q", len(blob)) + blob[16:],
        "trailing bytes": blob + b"\x00",
        "truncated or does not match": blob[:-1],
    }
    for reason, bad in cases.items():
        with pytest.raises(Refused, match=reason):
            decode_trace(bad, LIMITS)
    small = dataclasses.replace(LIMITS, message_bytes=LIMITS.message_bytes - 1)
    with pytest.raises(Refused, match=f"above the stage's {small.message_bytes}-byte message limit"):
        decode_trace(blob, small)


def test_oversized_undecryptable_and_unfaithful_content_is_refused(store, honest):
    state, trace = honest
    published = publish_round(store, KEY, state, trace)
    bomb = dag_bomb(store, levels=3, leaf=b"\x01" * KUBO_DEFAULT.chunk_size)
    with pytest.raises(
        Refused, match=f"trace {bomb}: {bomb} is larger than the {LIMITS.encrypted_trace_bytes}-byte"
    ):
        open_trace(store, KEY, bomb, published.trace_root, LIMITS)
    with pytest.raises(Refused, match=f"checkpoint {bomb}: .*larger than the {LIMITS.checkpoint_bytes}-byte"):
        open_checkpoint(store, KEY, bomb, published.checkpoint_digest, LIMITS)
    other_key = StageKey(0, 1, b"\x08" * 32)
    foreign = store.put(encrypt_checkpoint(other_key, state))
    with pytest.raises(Refused, match=f"checkpoint {foreign}: wrong key"):
        open_checkpoint(store, KEY, foreign, published.checkpoint_digest, LIMITS)
    plaintext = store.put(state)
    with pytest.raises(Refused, match="not a checkpoint ciphertext"):
        open_checkpoint(store, KEY, plaintext, published.checkpoint_digest, LIMITS)
    with pytest.raises(Refused, match="the chain says 0000"):
        open_checkpoint(store, KEY, published.checkpoint_cid, b"\x00" * 32, LIMITS)
    with pytest.raises(Refused, match="has Merkle root"):
        open_trace(store, KEY, published.trace_cid, b"\x00" * 32, LIMITS)
    garbage = store.put(encrypt_checkpoint(KEY, b"{not a trace"))
    with pytest.raises(Refused, match=f"trace {garbage}: not a protocol-models trace"):
        open_trace(store, KEY, garbage, published.trace_root, LIMITS)
    with pytest.raises(Refused, match="not-a-cid"):
        open_trace(store, KEY, "not-a-cid", published.trace_root, LIMITS)


def test_content_nobody_serves_is_not_refused(store, tmp_path, honest):
    elsewhere = EmbeddedStore(tmp_path / "elsewhere")
    published = publish_round(elsewhere, KEY, *honest)
    with pytest.raises(ContentUnavailable):
        open_trace(store, KEY, published.trace_cid, published.trace_root, LIMITS)


def _pinned(store, **changes) -> str:
    data = {**json.loads(SPEC_PATH.read_text()), **changes}
    return store.put(json.dumps(data).encode())


def test_a_spec_that_cannot_be_judged_is_refused(store):
    assert open_spec(store, pin_spec(store, SPEC)) == SPEC
    unknown = _pinned(store, dataset={"name": "nowhere", "sha256": "00" * 32})
    with pytest.raises(Refused, match=f"model spec {unknown}: dataset 'nowhere' not found"):
        open_spec(store, unknown)
    wrong = _pinned(store, dataset={**SPEC.dataset.model_dump(), "sha256": "00" * 32})
    with pytest.raises(Refused, match="the spec expects 0000"):
        open_spec(store, wrong)
    with pytest.raises(Refused, match=r"invalid model spec at .*: n_head: unknown field"):
        open_spec(store, _pinned(store, n_head=4))
    not_json = store.put(b"\xff" * 100)
    with pytest.raises(Refused, match="does not decode as a JSON model spec"):
        open_spec(store, not_json)
    huge = store.put(b" " * (MAX_SPEC_BYTES + 1))
    with pytest.raises(Refused, match=f"larger than the {MAX_SPEC_BYTES}-byte limit"):
        open_spec(store, huge)


def test_a_stage_over_the_limits_is_refused_before_anything_is_allocated(store):
    wide = SPEC.model_copy(update={"d_model": 65536, "n_heads": 4})
    with pytest.raises(Refused, match=r"stage 1 would hold .* parameters .* above the 4294967296-byte limit"):
        stage_limits(wide, 1, "QmWide")
    deep = SPEC.model_copy(
        update={"n_layers": MAX_LAYERS + 1, "stages": [(0, 1), (1, 2), (2, MAX_LAYERS + 1)]}
    )
    with pytest.raises(Refused, match=f"declares {MAX_LAYERS + 1} layers"):
        stage_limits(deep, 0, "QmDeep")
    long = SPEC.model_copy(update={"round_steps": 10**6})
    with pytest.raises(Refused, match=r"trace .* above the 4294967296-byte limit"):
        stage_limits(long, 2, "QmLong")
    with pytest.raises(Refused, match="stage 3 is not a stage"):
        stage_limits(SPEC, 3, "QmTiny")
    assert stage_limits(SPEC, 1, "QmTiny") == LIMITS


def _claim_of(manifest: ClaimManifest, manifest_cid: str, claim_id: int = 7) -> SubmittedClaim:
    """The claim a ClaimSubmitted event would state for `manifest` (as the worker's claim_input)."""
    (model_id, stage, first, last, parent, checkpoint, digest, root, manifest32, units) = claim_input(
        manifest, manifest_cid
    )
    event = {
        "claimId": claim_id,
        "modelId": model_id,
        "stage": stage,
        "firstRound": first,
        "lastRound": last,
        "worker": "0x" + "11" * 20,
        "previousClaimId": 0,
        "parentCID": parent,
        "checkpointCID": checkpoint,
        "checkpointDigest": digest,
        "roundsRoot": root,
        "manifestCID": manifest32,
        "workUnits": units,
    }
    return SubmittedClaim.from_event(event)


def test_a_manifest_must_be_the_claim_the_chain_holds(store, honest):
    state, trace = honest
    published = publish_round(store, KEY, state, trace)
    manifest = ClaimManifest(0, 1, None, (published.record(1), published.record(2)))
    cid = publish_manifest(store, manifest)
    claim = _claim_of(manifest, cid)
    assert open_manifest(store, claim) == manifest
    for change, reason in [
        ({"stage": 2}, "its stage is 1, the claim's is 2"),
        ({"last_round": 3}, "its last round is 2, the claim's is 3"),
        ({"parent_cid": cid}, f"its parent is None, the claim's is {cid}"),
        ({"work_units": claim.work_units + 1}, "its work units is"),
        ({"rounds_root": "00" * 32}, "its rounds root is"),
    ]:
        with pytest.raises(Refused, match=re.escape(reason)):
            open_manifest(store, dataclasses.replace(claim, **change))
    spaced = store.put(manifest.canonical_bytes().replace(b",", b", "))
    with pytest.raises(Refused, match=f"manifest {spaced}: .*not in canonical form"):
        open_manifest(store, dataclasses.replace(claim, manifest_cid=spaced))
    bomb = dag_bomb(store, levels=2, leaf=b"{" * KUBO_DEFAULT.chunk_size)
    with pytest.raises(Refused, match=f"manifest {bomb}: {bomb} is larger than the 3072-byte limit"):
        open_manifest(store, dataclasses.replace(claim, manifest_cid=bomb))
