"""Same-stage replicas: each steps on the micro-batches it trained, its trace replays, and the
replicas' states average into one canonical state."""

import numpy as np
import pytest

from offchain.model.checkpoint import average_state_bytes
from offchain.model.data import batch_for
from offchain.model.records import MessageHeader
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round


def _pipeline(spec, middles, assignment, retried=()):
    """One step; stage 1 has several replicas, `assignment[mb]` = the one that trains mb;
    `retried` micro-batches first went to the other replica, whose result was abandoned."""
    first, last = StageTrainer(spec, 0), StageTrainer(spec, 2)
    for mb in range(spec.micro_batches):
        tokens, targets = (encode_tokens(t, spec) for t in batch_for(spec, 0, 0, mb))
        a0 = first.forward(MessageHeader(0, 0, 0, 0, mb, "forward"), b"", tokens)
        if mb in retried:
            middles[1 - assignment[mb]].forward(MessageHeader(0, 1, 0, 0, mb, "forward"), a0, tokens)
        middle = middles[assignment[mb]]
        a1 = middle.forward(MessageHeader(0, 1, 0, 0, mb, "forward"), a0, tokens)
        g2, _ = last.forward_backward(MessageHeader(0, 2, 0, 0, mb, "forward"), a1, tokens, targets)
        middle.backward(MessageHeader(0, 1, 0, 0, mb, "backward"), g2)


def test_replicas_step_on_their_share_and_replay(tiny):
    parent = StageTrainer(tiny, 1).state_bytes()
    replicas = [StageTrainer(tiny, 1), StageTrainer(tiny, 1)]
    _pipeline(tiny, replicas, {0: 0, 1: 1}, retried=(1,))
    records = [replicas[0].apply_step(0, 0, [0]), replicas[1].apply_step(0, 0, [1])]
    assert [[mb.index for mb in record.micro_batches] for record in records] == [[0], [1]]
    assert records[0].state_after != records[1].state_after
    for replica in replicas:
        assert replay_round(tiny, 1, parent, replica.trace, require_signatures=False).ok
    averaged = average_state_bytes([replica.state_bytes() for replica in replicas])
    merged = StageTrainer(tiny, 1, state=averaged)
    mean = np.mean(
        [np.frombuffer(r.state_bytes()[-4000:], "<f4") for r in replicas], axis=0, dtype=np.float32
    )
    assert np.array_equal(np.frombuffer(merged.state_bytes()[-4000:], "<f4"), mean)
    with pytest.raises(ValueError, match="differ in layout"):
        average_state_bytes([averaged, StageTrainer(tiny, 1).state_bytes()])


def test_explicit_full_set_equals_default(tiny):
    one = [StageTrainer(tiny, 1)]
    two = [StageTrainer(tiny, 1)]
    _pipeline(tiny, one, {0: 0, 1: 0})
    _pipeline(tiny, two, {0: 0, 1: 0})
    assert one[0].apply_step(0, 0) == two[0].apply_step(0, 0, [1, 0])
    three = [StageTrainer(tiny, 1)]
    _pipeline(tiny, three, {0: 0, 1: 0})
    for bad in ([0, 0], [], [2]):
        with pytest.raises(ValueError, match="distinct indices"):
            three[0].apply_step(0, 0, bad)
