"""The split model trains, and training it as 3 stages is bitwise the unsplit model."""

import torch
import torch.nn.functional as F

from offchain.model.codecs import subspace_basis
from offchain.model.data import batch_for
from offchain.model.gpt import FrozenEmbedding, build_model
from offchain.model.reference import train_single_process
from offchain.model.spec import parse_spec
from offchain.model.trainer import StageTrainer, deterministic_mode


def test_reference_training_lowers_loss(tiny):
    losses = train_single_process(tiny, rounds=8).losses
    assert len(losses) == 8 * tiny.round_steps
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert first > 5.0
    assert last < first - 1.5


def test_stage_modules_own_only_their_layers(tiny):
    names = [set(dict(build_model(tiny, stage).named_parameters())) for stage in range(3)]
    assert any(name.startswith("tok_emb") for name in names[0])
    assert not any(name.startswith(("tok_emb", "head", "norm.")) for name in names[1])
    assert {name.split(".")[1] for name in names[1]} == {"1"}
    assert "head.weight" in names[2]
    whole = dict(build_model(tiny).named_parameters())
    assert set(whole) == names[0] | names[1] | names[2]
    for stage in range(3):
        for name, param in build_model(tiny, stage).named_parameters():
            assert torch.equal(param, whole[name]), name


def _projected_forward(spec, model, tokens):
    """The whole model with the subspace codec's boundary map written out: after each stage but
    the last, h -> E_f + U U^T (h - E_f), E_f the frozen embedding."""
    basis = subspace_basis(spec.d_model, spec.codec.k, spec.seed)
    frozen = FrozenEmbedding(spec)(tokens)
    h = model.embed(tokens)
    ends = {end for _, end in spec.stages[:-1]}
    for index, layer in model.layers.items():
        h = layer(h)
        if int(index) + 1 in ends:
            h = frozen + ((h - frozen) @ basis) @ basis.T
    return model.head(model.norm(h))


def _train_unsplit(spec, steps, forward=None):
    """Plain torch loop on the whole model, with the pipeline's optimizer semantics: mean of the
    micro-batch gradients, clip and AdamW per stage's parameter set."""
    deterministic_mode(spec)
    model = build_model(spec)
    named = dict(model.named_parameters())
    groups = []
    for stage in range(spec.num_stages):
        owned = sorted(dict(build_model(spec, stage).named_parameters()))
        params = [named[name] for name in owned]
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.optimizer.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=spec.optimizer.lr,
            betas=spec.optimizer.betas,
            eps=spec.optimizer.eps,
            foreach=False,
        )
        groups.append((params, optimizer))
    losses = []
    for step in range(steps):
        round_, in_round = divmod(step, spec.round_steps)
        total = 0.0
        for mb in range(spec.micro_batches):
            tokens, targets = batch_for(spec, round_, in_round, mb)
            logits = forward(spec, model, tokens) if forward else model(tokens)
            loss = F.cross_entropy(logits.reshape(-1, spec.vocab_size), targets.reshape(-1))
            loss.backward()
            total += loss.item()
        losses.append(total / spec.micro_batches)
        for params, optimizer in groups:
            for p in params:
                p.grad.div_(spec.micro_batches)
            torch.nn.utils.clip_grad_norm_(params, spec.optimizer.grad_clip, foreach=False)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return model, losses


def test_three_stages_equal_unsplit_model_bitwise(tiny):
    rounds = 2
    model, losses = _train_unsplit(tiny, rounds * tiny.round_steps)
    result = train_single_process(tiny, rounds)
    assert result.losses == losses
    whole = dict(model.named_parameters())
    for stage in range(tiny.num_stages):
        trainer = StageTrainer(tiny, stage, state=result.states[stage])
        assert trainer.state_digest() == result.state_digests[stage]
        for name, param in trainer.module.named_parameters():
            assert torch.equal(param, whole[name]), name


def test_subspace_pipeline_is_the_projected_model(tiny_data):
    """What crosses a subspace boundary (k coordinates + token ids) loses nothing the projected
    model needs: forward and backward match the whole model with the projection written out."""
    spec = parse_spec({**tiny_data, "codec": {"name": "subspace", "k": 16}})
    model, losses = _train_unsplit(spec, spec.round_steps, _projected_forward)
    result = train_single_process(spec, 1)
    assert result.losses == losses
    whole = dict(model.named_parameters())
    for stage in range(spec.num_stages):
        trainer = StageTrainer(spec, stage, state=result.states[stage])
        for name, param in trainer.module.named_parameters():
            assert torch.equal(param, whole[name]), name
    assert whole["tok_emb.weight"].requires_grad
