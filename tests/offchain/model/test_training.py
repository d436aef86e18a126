"""The split Llama trains, its stages are transformers' LlamaForCausalLM cut into pieces (names,
logits, training: bitwise), and attention is causal on every path."""

import torch

from offchain.model.baseline import UnsplitTrainer
from offchain.model.codecs import subspace_basis
from offchain.model.data import batch_for
from offchain.model.export import hf_model
from offchain.model.llama import FrozenEmbedding, build_stage
from offchain.model.records import MessageHeader
from offchain.model.reference import train_single_process
from offchain.model.spec import parse_spec
from offchain.model.tokens import encode_tokens
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round


def test_reference_training_lowers_loss(tiny):
    losses = train_single_process(tiny, rounds=8).losses
    assert len(losses) == 8 * tiny.round_steps
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert first > 5.0
    assert last < first - 0.8


def test_stages_own_their_layers_under_hugging_face_names(tiny):
    names = [set(dict(build_stage(tiny, stage).named_parameters())) for stage in range(3)]
    assert "model.embed_tokens.weight" in names[0]
    assert "model.layers.0.self_attn.q_proj.weight" in names[0]
    assert {name.split(".")[2] for name in names[1]} == {"1"}
    assert {"model.norm.weight", "lm_head.weight", "model.layers.2.mlp.down_proj.weight"} <= names[2]
    assert not names[0] & names[1] and not names[1] & names[2]
    hf = hf_model(tiny, train_single_process(tiny, rounds=0).states)
    assert set(hf.state_dict()) == names[0] | names[1] | names[2]
    params = sum(p.numel() for p in hf.parameters())
    assert 100_000 <= params <= 500_000


def _forward_only(trainers, token_bytes):
    activation = b""
    for trainer in trainers:
        activation = trainer.forward_only(activation, token_bytes)
    return activation


def _logits(spec, raw):
    return torch.frombuffer(bytearray(raw), dtype=torch.float32).view(
        spec.micro_batch_size, spec.context, spec.config.vocab_size
    )


def test_checkpoints_load_into_llama_for_causal_lm_with_the_pipelines_logits(tiny):
    result = train_single_process(tiny, rounds=1)
    trainers = [StageTrainer(tiny, stage, state=state) for stage, state in enumerate(result.states)]
    tokens, _ = batch_for(tiny, 5, 0, 0)
    pipeline = _logits(tiny, _forward_only(trainers, encode_tokens(tokens, tiny)))
    model = hf_model(tiny, result.states)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, pipeline)


def test_attention_is_causal_on_every_path(tiny):
    """Changing the tokens after position t moves no logit or activation at positions <= t: the
    training path (each boundary), the inference path, and the exported model, SDPA and eager."""
    t = 20
    states = train_single_process(tiny, rounds=1).states
    tokens, _ = batch_for(tiny, 0, 0, 0)
    changed = tokens.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 7) % tiny.config.vocab_size

    def boundaries(ids):
        trainers = [StageTrainer(tiny, stage, state=state) for stage, state in enumerate(states)]
        activation, outputs = b"", []
        for stage, trainer in enumerate(trainers[:-1]):
            header = MessageHeader(0, stage, 0, 0, 0, "forward")
            activation = trainer.forward(header, activation, encode_tokens(ids, tiny))
            outputs.append(trainer.codec.decode(activation, trainer.activation_shape))
        outputs.append(_logits(tiny, _forward_only(trainers, encode_tokens(ids, tiny))))
        return outputs

    for before, after in zip(boundaries(tokens), boundaries(changed), strict=True):
        assert torch.equal(before[:, : t + 1], after[:, : t + 1])
        assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])
    model = hf_model(tiny, states)
    for implementation in ("sdpa", "eager"):
        model.config._attn_implementation = implementation
        with torch.no_grad():
            before, after = model(tokens).logits, model(changed).logits
        assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=0, rtol=0), implementation
        assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])


def _train_unsplit(spec, steps, **forward):
    """LlamaForCausalLM in a plain torch loop (offchain/model/baseline.py) for `steps` steps."""
    baseline = UnsplitTrainer(spec, **forward)
    losses = [baseline.step(*divmod(step, spec.round_steps)) for step in range(steps)]
    return baseline.model, losses


def _assert_stages_equal(spec, model, states):
    whole = dict(model.named_parameters())
    for stage in range(spec.num_stages):
        trainer = StageTrainer(spec, stage, state=states[stage])
        for name, param in trainer.module.named_parameters():
            assert torch.equal(param, whole[name]), name


def test_three_stages_train_bitwise_like_llama_for_causal_lm(tiny):
    rounds = 2
    model, losses = _train_unsplit(tiny, rounds * tiny.round_steps)
    result = train_single_process(tiny, rounds)
    assert result.losses == losses
    _assert_stages_equal(tiny, model, result.states)


def test_a_rate_schedule_trains_bitwise_like_llama_for_causal_lm_and_replays(tiny_data):
    """The schedule is applied by (round, step) alone: the pipeline, the unsplit loop and a
    verifier's replay of a later round all take the same steps."""
    optimizer = {**tiny_data["optimizer"], "schedule": {"warmup_steps": 3, "decay_steps": 6}}
    spec = parse_spec({**tiny_data, "optimizer": optimizer})
    rounds = 2
    model, losses = _train_unsplit(spec, rounds * spec.round_steps)
    result = train_single_process(spec, rounds)
    assert result.losses == losses
    assert losses != _train_unsplit(parse_spec(tiny_data), rounds * spec.round_steps)[1]
    _assert_stages_equal(spec, model, result.states)
    parents = train_single_process(spec, 1).states
    for stage, trace in enumerate(result.traces):
        report = replay_round(spec, stage, parents[stage], trace, require_signatures=False)
        assert report.ok, report
        assert report.state == result.states[stage]


def _projected_forward(spec, model, tokens):
    """LlamaForCausalLM with the subspace codec's boundary map written out: after each stage but
    the last, h -> E_f + U U^T (h - E_f), E_f the frozen embedding (added once, on stage 0)."""
    basis = subspace_basis(spec.config.hidden_size, spec.codec.k, spec.seed)
    frozen = FrozenEmbedding(spec)(tokens)
    body = model.model
    h = body.embed_tokens(tokens) + frozen
    position_ids = torch.arange(tokens.shape[1])[None]
    position_embeddings = body.rotary_emb(h, position_ids)
    ends = {end for _, end in spec.stages[:-1]}
    for index, layer in enumerate(body.layers):
        h = layer(h, position_ids=position_ids, position_embeddings=position_embeddings)
        if index + 1 in ends:
            h = frozen + ((h - frozen) @ basis) @ basis.T
    return model.lm_head(body.norm(h))


def test_subspace_pipeline_is_the_projected_model(tiny_data):
    """What crosses a subspace boundary (k coordinates + token ids) loses nothing the projected
    model needs: forward and backward match the whole model with the projection written out."""
    spec = parse_spec({**tiny_data, "codec": {"name": "subspace", "k": 16}})
    model, losses = _train_unsplit(spec, spec.round_steps, forward=_projected_forward)
    result = train_single_process(spec, 1)
    assert result.losses == losses
    _assert_stages_equal(spec, model, result.states)
