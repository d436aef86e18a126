"""StageTrainer: refuses bad messages, is independent of arrival order, counts a retry once,
round-trips its canonical state, and trains with every codec."""

import pytest

from offchain.model.data import batch_for
from offchain.model.records import MessageHeader
from offchain.model.reference import run_step, train_single_process
from offchain.model.spec import parse_spec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer


def _inputs(spec, mb, step=0):
    tokens, targets = batch_for(spec, 0, step, mb)
    return encode_tokens(tokens, spec), encode_tokens(targets, spec)


def _header(stage, mb, direction="forward", step=0, model_id=0, round_=0):
    return MessageHeader(model_id, stage, round_, step, mb, direction)


def test_bad_messages_are_refused_and_the_stage_keeps_working(tiny):
    trainer = StageTrainer(tiny, 1)
    tokens, _ = _inputs(tiny, 0)
    activation = StageTrainer(tiny, 0).forward(_header(0, 0), b"", tokens)
    with pytest.raises(ValueError, match="model 5"):
        trainer.forward(_header(1, 0, model_id=5), activation, tokens)
    with pytest.raises(ValueError, match="stage 2"):
        trainer.forward(_header(2, 0), activation, tokens)
    with pytest.raises(ValueError, match="expected"):
        trainer.forward(_header(1, 0), activation[:-4], tokens)
    with pytest.raises(ValueError, match="micro-batch 9"):
        trainer.forward(_header(1, 9), activation, tokens)
    with pytest.raises(ValueError, match="before its forward"):
        trainer.backward(_header(1, 1, "backward"), activation)
    with pytest.raises(ValueError, match="last stage"):
        StageTrainer(tiny, 2).forward(_header(2, 0), activation, tokens)
    assert len(trainer.forward(_header(1, 0), activation, tokens)) == len(activation)
    with pytest.raises(ValueError, match="this stage is at round 0 step 0"):
        trainer.forward(_header(1, 0, step=1), activation, tokens)
    with pytest.raises(ValueError, match=r"no gradients yet for micro-batches \[0, 1\]"):
        trainer.apply_step(0, 0)


def _step_in_order(spec, order, retry=None):
    """One step of a 3-stage chain, micro-batches visiting in `order`; `retry` = a micro-batch
    whose whole forward/backward is sent twice (as when a worker died and the driver retried)."""
    trainers = [StageTrainer(spec, stage) for stage in range(3)]
    for mb in order + ([retry] if retry is not None else []):
        tokens, targets = _inputs(spec, mb)
        a0 = trainers[0].forward(_header(0, mb), b"", tokens)
        a1 = trainers[1].forward(_header(1, mb), a0, tokens)
        g2, _ = trainers[2].forward_backward(_header(2, mb), a1, tokens, targets)
        g1 = trainers[1].backward(_header(1, mb, "backward"), g2)
        assert trainers[0].backward(_header(0, mb, "backward"), g1) is None
    return [trainer.apply_step(0, 0) for trainer in trainers]


def test_arrival_order_and_retries_do_not_change_the_step(tiny):
    in_order = _step_in_order(tiny, [0, 1])
    assert _step_in_order(tiny, [1, 0]) == in_order
    assert _step_in_order(tiny, [0, 1], retry=0) == in_order
    for record in in_order:
        assert record.state_before != record.state_after
        assert [mb.index for mb in record.micro_batches] == [0, 1]


def test_state_round_trip_and_resume(tiny):
    straight = train_single_process(tiny, rounds=2)
    first = train_single_process(tiny, rounds=1)
    resumed = train_single_process(tiny, rounds=1, first_round=1, states=first.states)
    assert resumed.state_digests == straight.state_digests
    assert first.losses + resumed.losses == straight.losses
    trainer = StageTrainer(tiny, 1, state=first.states[1])
    assert trainer.state_bytes() == first.states[1]
    with pytest.raises(ValueError, match="checkpoint of stage 1, this is stage 0"):
        StageTrainer(tiny, 0, state=first.states[1])


@pytest.mark.parametrize(
    ("codec", "per_token"),
    [
        ({"name": "fp16"}, 2 * 64),
        ({"name": "int8", "block_size": 32}, 64 + 8),
        ({"name": "subspace", "k": 8}, 32),
        ({"name": "subspace", "k": 32, "coordinates": "int8", "block_size": 32}, 36),
    ],
)
def test_every_codec_trains_through_the_pipeline(tiny_data, codec, per_token):
    spec = parse_spec({**tiny_data, "codec": codec})
    trainers = [StageTrainer(spec, stage) for stage in range(3)]
    losses = []
    for step in range(spec.round_steps * 3):
        loss, crossed = run_step(trainers, step // spec.round_steps, step % spec.round_steps)
        losses.append(loss)
    tokens = spec.micro_batches * spec.micro_batch_size * spec.context
    # 2 boundaries, both directions
    assert crossed == 4 * tokens * per_token
    assert sum(losses[-3:]) < sum(losses[:3]) - 1.5
