"""What someone would run instead of the swarm: transformers' `LlamaForCausalLM` trained in one
process, on the spec's batches, with the pipeline's optimizer step (offchain/model/optim.py: AdamW
over each stage's parameters, mean of the micro-batch gradients, clipped per stage, the spec's rate
schedule), under the spec's compute profile.

It starts from the stages' seeded init, so a pipeline run and this loop train the same model: the
equivalence test checks they stay bitwise equal, and bench/pipeline.py measures what the pipeline
costs against it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from offchain.data.dataset import Dataset
from offchain.model.data import batch_for
from offchain.model.export import llama_for_causal_lm
from offchain.model.llama import build_stage
from offchain.model.optim import optimizer_step, stage_adamw
from offchain.model.profile import apply_profile, autocast
from offchain.model.spec import ModelSpec

Forward = Callable[[ModelSpec, LlamaForCausalLM, torch.Tensor], torch.Tensor]
"""(spec, model, token ids) -> logits: the model's own forward unless a test writes out another."""


def _own_forward(_spec: ModelSpec, model: LlamaForCausalLM, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens).logits


class UnsplitTrainer:
    """The whole model in one process; `step` is one optimizer step over the spec's micro-batches."""

    def __init__(
        self, spec: ModelSpec, dataset: Dataset | None = None, forward: Forward = _own_forward
    ) -> None:
        apply_profile(spec.profile)
        self.spec, self.dataset, self.forward = spec, dataset, forward
        stages = [build_stage(spec, stage) for stage in range(spec.num_stages)]
        weights = {name: param.detach() for stage in stages for name, param in stage.named_parameters()}
        self.model = llama_for_causal_lm(spec, weights).to(spec.profile.torch_device).train()
        named = dict(self.model.named_parameters())
        self.groups = []
        for stage in stages:
            params = [named[name] for name in sorted(dict(stage.named_parameters()))]
            self.groups.append((params, stage_adamw(spec, params)))

    def _loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        device = self.spec.profile.torch_device
        with autocast(self.spec.profile):
            logits = self.forward(self.spec, self.model, tokens.to(device)).float()
        return F.cross_entropy(logits.view(-1, self.spec.config.vocab_size), targets.to(device).view(-1))

    def step(self, round: int, step: int) -> float:
        """One optimizer step; returns the mean micro-batch loss."""
        spec = self.spec
        total = 0.0
        for mb in range(spec.micro_batches):
            loss = self._loss(*batch_for(spec, round, step, mb, self.dataset))
            loss.backward()
            total += loss.item()
        for params, optimizer in self.groups:
            for param in params:
                param.grad.div_(spec.micro_batches)
            optimizer_step(spec, optimizer, params, round, step)
        return total / spec.micro_batches

    def validation_loss(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Mean cross-entropy over held-out batches (no gradients)."""
        with torch.no_grad():
            return sum(self._loss(tokens, targets).item() for tokens, targets in batches) / len(batches)
