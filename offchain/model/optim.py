"""The optimizer step every trainer of a stage's parameters takes (a pipeline stage worker, its
replay, the single-process baseline): one function, so they stay bitwise equal."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from offchain.model.spec import ModelSpec


def stage_adamw(spec: ModelSpec, params: Sequence[torch.nn.Parameter]) -> torch.optim.AdamW:
    """AdamW over one stage's parameters: weight decay on matrices and embeddings only."""
    opt = spec.optimizer
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": opt.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=opt.lr,
        betas=opt.betas,
        eps=opt.eps,
        foreach=False,
    )


def optimizer_step(
    spec: ModelSpec,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    round: int,
    step: int,
) -> None:
    """Clip the stage's gradient norm, set the scheduled rate of (round, step), step, clear."""
    if spec.optimizer.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, spec.optimizer.grad_clip, foreach=False)
    lr = spec.learning_rate(round, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
