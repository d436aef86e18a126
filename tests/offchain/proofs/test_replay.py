"""Signed messages, the trace's canonical bytes and Merkle root, and replay: an honest round
matches at every step; each kind of tampering is caught at the step where it was made."""

import dataclasses
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from offchain.model.records import MessageHeader, Trace, message_payload
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.proofs.replay import replay_round
from offchain.proofs.signing import recover_signer, sign_message
from offchain.proofs.trace import merkle_proof, merkle_root, verify_merkle_proof

SPEC = load_spec(Path(__file__).resolve().parents[3] / "specs" / "tiny.json")
# Throwaway test identities, derived from public strings: never funded anywhere.
DRIVER, *STAGES = (Account.from_key(keccak(text=f"pm-test-{name}")) for name in ("driver", "s0", "s1", "s2"))
MALLORY = Account.from_key(keccak(text="pm-test-mallory"))


def _sender(header: MessageHeader):
    if header.direction == "forward":
        return DRIVER if header.stage == 0 else STAGES[header.stage - 1]
    return STAGES[header.stage + 1]


def _sign(header, payload):
    account = _sender(header)
    return sign_message(account.key, header, payload), account.address


@pytest.fixture(scope="module")
def honest():
    """Round 0 from the seeded init (its parent states), then round 1, whose traces we replay."""
    first = train_single_process(SPEC, 1, sign=_sign)
    second = train_single_process(SPEC, 1, first_round=1, states=first.states, sign=_sign)
    return first.states, second


def _copy(trace: Trace) -> Trace:
    return Trace.from_bytes(trace.to_bytes())


def _allowed(stage):
    return {DRIVER.address, *(account.address for account in STAGES)} - {STAGES[stage].address}


def test_signature_recovers_the_sender_and_binds_header_and_payload():
    header = MessageHeader(7, 1, 2, 3, 0, "forward")
    signature = sign_message(DRIVER.key, header, b"payload")
    assert len(signature) == 65
    assert recover_signer(header, b"payload", signature) == DRIVER.address
    assert recover_signer(header, b"payloaD", signature) != DRIVER.address
    assert recover_signer(dataclasses.replace(header, step=4), b"payload", signature) != DRIVER.address
    assert MessageHeader.decode(header.encode()) == header


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_honest_round_replays_at_every_step(honest, stage):
    parents, result = honest
    trace = _copy(result.traces[stage])
    assert trace.to_bytes() == result.traces[stage].to_bytes()
    assert len(trace.records) == SPEC.round_steps
    assert len(trace.messages) == SPEC.round_steps * SPEC.micro_batches * (1 if stage == 2 else 2)
    report = replay_round(SPEC, stage, parents[stage], trace, signers=_allowed(stage))
    assert report.ok, report
    assert report.steps_checked == SPEC.round_steps
    assert trace.records[-1].state_after == result.state_digests[stage]


def test_merkle_root_and_inclusion_proofs(honest):
    records = honest[1].traces[1].records
    root = merkle_root(records)
    assert len(root) == 32
    for count in (1, 2, 3, len(records)):
        for index in range(count):
            sub_root = merkle_root(records[:count])
            assert verify_merkle_proof(
                records[index], index, count, merkle_proof(records[:count], index), sub_root
            )
    altered = dataclasses.replace(records[2], state_after="00" * 32)
    assert merkle_root([*records[:2], altered, *records[3:]]) != root
    assert not verify_merkle_proof(altered, 2, len(records), merkle_proof(records, 2), root)


def test_altered_weight_digest_is_caught_at_its_step(honest):
    parents, result = honest
    trace = _copy(result.traces[1])
    trace.records[2] = dataclasses.replace(trace.records[2], state_after="ab" * 32)
    report = replay_round(SPEC, 1, parents[1], trace)
    assert (report.first_divergent_step, report.reason) == (2, "state after the step")
    assert report.expected == "ab" * 32
    assert report.actual == result.traces[1].records[2].state_after


def test_swapped_input_is_caught_at_its_step(honest):
    """Stage 1 claims micro-batch 0 of step 1 received micro-batch 1's activation."""
    parents, result = honest
    trace = _copy(result.traces[1])
    mbs = trace.records[1].micro_batches
    swapped = dataclasses.replace(mbs[0], inputs={**mbs[0].inputs, "activation": mbs[1].inputs["activation"]})
    trace.records[1] = dataclasses.replace(trace.records[1], micro_batches=(swapped, *mbs[1:]))
    report = replay_round(SPEC, 1, parents[1], trace)
    assert report.first_divergent_step == 1
    assert report.reason == "forward message of micro-batch 0: payload differs from the signed one"
    unsigned = replay_round(
        SPEC, 1, parents[1], dataclasses.replace(trace, messages=[]), require_signatures=False
    )
    assert unsigned.first_divergent_step == 1
    assert unsigned.reason == "activation sent by micro-batch 0"


def test_altered_payload_is_caught_at_its_step(honest):
    """A gradient payload rewritten (and re-filed under its new digest) at step 3."""
    parents, result = honest
    trace = _copy(result.traces[0])
    mbs = trace.records[3].micro_batches
    grad = bytearray(trace.payloads[mbs[1].inputs["grad"]])
    grad[:4] = b"\x00\x00\x80\x7f"
    digest = trace.add_payload(bytes(grad))
    forged = dataclasses.replace(mbs[1], inputs={**mbs[1].inputs, "grad": digest})
    trace.records[3] = dataclasses.replace(trace.records[3], micro_batches=(mbs[0], forged))
    report = replay_round(SPEC, 0, parents[0], trace)
    assert report.first_divergent_step == 3
    assert report.reason == "backward message of micro-batch 1: payload differs from the signed one"


def test_bad_signature_is_caught_at_its_step(honest):
    parents, result = honest
    trace = _copy(result.traces[2])
    index = next(i for i, m in enumerate(trace.messages) if m.header.step == 2)
    message = trace.messages[index]
    forged = sign_message(MALLORY.key, message.header, b"anything")
    trace.messages[index] = dataclasses.replace(message, signature=forged)
    report = replay_round(SPEC, 2, parents[2], trace)
    assert report.first_divergent_step == 2
    assert report.reason.endswith("signature is not the sender's")
    assert report.expected == message.sender.lower()
    # a correct signature by a party that may not feed this stage
    impostor = dataclasses.replace(message, sender=MALLORY.address)
    trace.messages[index] = dataclasses.replace(
        impostor, signature=_resign(MALLORY, message, trace, result.traces[2].records[2])
    )
    report = replay_round(SPEC, 2, parents[2], trace, signers=_allowed(2))
    assert report.first_divergent_step == 2
    assert "is not an allowed sender" in report.reason


def _resign(account, message, trace, record):
    mb = record.micro_batches[message.header.micro_batch]
    parts = [trace.payloads[mb.inputs[name]] for name in ("activation", "tokens", "targets")]
    return sign_message(account.key, message.header, message_payload(*parts))


def test_wrong_parent_spec_or_profile(honest):
    parents, result = honest
    trace = result.traces[1]
    report = replay_round(SPEC, 1, parents[0], trace)
    assert (report.first_divergent_step, report.reason) == (0, "parent state")
    other = SPEC.profile.model_copy(update={"threads": 2}).digest()
    with pytest.raises(ValueError, match=f"recorded under compute profile {other[:16]}, the spec fixes"):
        replay_round(SPEC, 1, parents[1], dataclasses.replace(trace, profile=other))
    with pytest.raises(ValueError, match="another model spec"):
        replay_round(SPEC.model_copy(update={"seed": 1}), 1, parents[1], trace)
    with pytest.raises(ValueError, match="stage 1, not stage 2"):
        replay_round(SPEC, 2, parents[1], trace)
