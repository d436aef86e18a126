"""One pipeline stage's trainer: decodes what arrives, runs its layers, encodes what leaves,
applies optimizer steps in a reproducible order, and records the round's trace.

The transport (offchain/swarm) moves bytes; everything that decides the numbers lives here, so
the swarm, the single-process reference and a verifier's replay run the very same code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from offchain.errors import UserError
from offchain.model.checkpoint import load_state_bytes, state_bytes
from offchain.model.codecs import get_codec
from offchain.model.llama import FrozenEmbedding, build_stage
from offchain.model.optim import optimizer_step, stage_adamw
from offchain.model.profile import apply_profile, autocast, can_run
from offchain.model.records import (
    MessageHeader,
    MicroBatchRecord,
    SignedMessage,
    StepRecord,
    Trace,
    message_payload,
    sha256_hex,
)
from offchain.model.spec import ModelSpec
from offchain.model.tokens import decode_tokens

__all__ = ["MessageHeader", "StageTrainer", "StepRecord"]


@dataclass
class _MicroBatch:
    """What one micro-batch left behind: autograd ends for backward, its gradients, its digests."""

    inputs: dict[str, str]
    outputs: dict[str, str]
    leaf: torch.Tensor | None = None
    output: torch.Tensor | None = None
    grads: list[torch.Tensor] | None = None
    loss: float | None = None
    source: tuple[tuple[int, int], ...] | None = None


class StageTrainer:
    """Trains the layers of `stage_index`. Messages must belong to the current step of the current
    round (a message for a new round starts a new trace); a repeated (step, micro-batch) replaces
    the earlier one, so a retried micro-batch never counts twice."""

    def __init__(
        self, spec: ModelSpec, stage_index: int, *, state: bytes | None = None, model_id: int = 0
    ) -> None:
        spec.check_stage(stage_index)
        runnable, reason = can_run(spec.profile)
        if not runnable:
            raise UserError(f"cannot train or replay spec {spec.name!r} on this machine: {reason}")
        apply_profile(spec.profile)
        torch.manual_seed(spec.seed)
        self.spec = spec
        self.spec_cid = spec.cid()
        self.profile_digest = spec.profile.digest()
        self.device = spec.profile.torch_device
        self.stage = stage_index
        self.model_id = model_id
        self.is_first = stage_index == 0
        self.is_last = stage_index == spec.num_stages - 1
        self.module = build_stage(spec, stage_index)
        self.codec = get_codec(spec.codec, spec.config.hidden_size, spec.seed)
        self.frozen_embedding = FrozenEmbedding(spec) if spec.codec.name == "subspace" else None
        named = dict(self.module.named_parameters())
        self.params = [named[name] for name in sorted(named) if named[name].requires_grad]
        self.optimizer = stage_adamw(spec, self.params)
        if state is not None:
            self.load_state(state)
        self._digest: str | None = None
        self._pending: dict[int, _MicroBatch] = {}
        self._messages: dict[tuple[int, str], SignedMessage] = {}
        self._payloads: dict[tuple[int, str], list[bytes]] = {}
        self.trace: Trace | None = None

    @property
    def activation_shape(self) -> tuple[int, int, int]:
        return (self.spec.micro_batch_size, self.spec.context, self.spec.config.hidden_size)

    # -- state -------------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """The stage checkpoint: canonical safetensors (offchain/model/checkpoint.py)."""
        return state_bytes(self.module, self.optimizer, spec_cid=self.spec_cid, stage=self.stage)

    def state_digest(self) -> str:
        if self._digest is None:
            self._digest = sha256_hex(self.state_bytes())
        return self._digest

    def load_state(self, data: bytes) -> None:
        load_state_bytes(self.module, self.optimizer, data, spec_cid=self.spec_cid, stage=self.stage)
        self._digest = None

    # -- messages ----------------------------------------------------------------------------

    def _begin(
        self, header: MessageHeader, direction: str, signature: bytes | None, sender: str | None
    ) -> None:
        """Refuse a message for another model/stage/direction or not for the current step."""
        if signature is not None and not sender:
            raise ValueError("a signed message needs its sender's address")
        apply_profile(self.spec.profile)
        if header.model_id != self.model_id:
            raise ValueError(f"message for model {header.model_id}, this worker trains model {self.model_id}")
        if header.stage != self.stage:
            raise ValueError(f"message for stage {header.stage}, this worker holds stage {self.stage}")
        if header.direction != direction:
            raise ValueError(f"expected a {direction} message, got {header.direction}")
        if not 0 <= header.micro_batch < self.spec.micro_batches:
            raise ValueError(f"micro-batch {header.micro_batch} outside 0..{self.spec.micro_batches - 1}")
        trace = self.trace
        if trace is None or header.round > trace.round:
            if header.step != 0:
                raise ValueError(f"round {header.round} must start at step 0, got step {header.step}")
            self.trace = Trace(
                self.model_id,
                self.stage,
                header.round,
                self.spec.digest(),
                self.profile_digest,
                self.state_digest(),
            )
            self._reset_step()
            return
        expected_step = len(trace.records)
        if header.round < trace.round or header.step != expected_step:
            raise ValueError(
                f"message for round {header.round} step {header.step}; "
                f"this stage is at round {trace.round} step {expected_step}"
            )

    def _reset_step(self) -> None:
        self._pending.clear()
        self._messages.clear()
        self._payloads.clear()

    def _remember(
        self, header: MessageHeader, parts: list[bytes], signature: bytes | None, sender: str | None
    ) -> None:
        """File the message's payload (and signature) for the trace; a repeat replaces it."""
        key = (header.micro_batch, header.direction)
        self._payloads[key] = parts
        if signature is not None:
            digest = sha256_hex(message_payload(*parts))
            self._messages[key] = SignedMessage(header, digest, sender, signature)
        else:
            self._messages.pop(key, None)

    def _tokens(self, data: bytes) -> torch.Tensor:
        return decode_tokens(data, self.spec).to(self.device)

    def _decode(self, data: bytes) -> torch.Tensor:
        return self.codec.decode(data, self.activation_shape).to(self.device)

    def _encode(self, tensor: torch.Tensor) -> bytes:
        return self.codec.encode(tensor.detach().float().cpu())

    def _input(self, activation: bytes, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stage's input (token ids or residual stream) and the leaf whose grad goes left."""
        if self.is_first:
            return tokens, None
        leaf = self._decode(activation).requires_grad_(True)
        hidden = leaf + self.frozen_embedding(tokens) if self.frozen_embedding is not None else leaf
        return hidden, leaf

    def _run(self, hidden: torch.Tensor) -> torch.Tensor:
        """The stage's layers under the profile's precision; float32 out (boundary and logits)."""
        with autocast(self.spec.profile):
            return self.module(hidden).float()

    def _boundary(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """What crosses to the next stage: the residual stream, minus the frozen embedding in
        subspace mode (the receiver adds it back from the token ids)."""
        return hidden - self.frozen_embedding(tokens) if self.frozen_embedding is not None else hidden

    def _grads(
        self, entry: _MicroBatch, outputs: torch.Tensor, leaf: torch.Tensor | None, grad: torch.Tensor | None
    ) -> bytes:
        """Per-micro-batch gradients (kept apart, summed in index order at apply_step); returns the
        encoded gradient of the stage input, b"" on stage 0."""
        wrt = [*self.params, leaf] if leaf is not None else self.params
        grads = torch.autograd.grad(outputs, wrt, grad_outputs=grad, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads, strict=True)]
        entry.grads = grads[: len(self.params)]
        return self._encode(grads[-1]) if leaf is not None else b""

    def forward(
        self,
        header: MessageHeader,
        activation: bytes,
        tokens: bytes,
        *,
        signature: bytes | None = None,
        sender: str | None = None,
        source: tuple[tuple[int, int], ...] | None = None,
    ) -> bytes:
        """Run this stage's layers on one micro-batch; returns the encoded activation to send right.
        `source`: the rows of the data set the driver says the tokens are (filed in the record)."""
        if self.is_last:
            raise ValueError(f"stage {self.stage} is the last stage: use forward_backward")
        self._begin(header, "forward", signature, sender)
        token_ids = self._tokens(tokens)
        hidden, leaf = self._input(activation, token_ids)
        output = self._boundary(self._run(hidden), token_ids)
        payload = self._encode(output)
        inputs = {"tokens": sha256_hex(tokens)}
        if not self.is_first:
            inputs["activation"] = sha256_hex(activation)
        self._pending[header.micro_batch] = _MicroBatch(
            inputs, {"activation": sha256_hex(payload)}, leaf, output, source=source
        )
        self._remember(header, [activation, tokens], signature, sender)
        return payload

    def forward_only(self, activation: bytes, tokens: bytes) -> bytes:
        """Inference/evaluation: no gradients, nothing recorded. Returns the encoded activation for
        the next stage, or on the last stage the logits as float32 little-endian [B, T, vocab]."""
        token_ids = self._tokens(tokens)
        with torch.no_grad():
            hidden, _ = self._input(activation, token_ids)
            output = self._run(hidden)
            if self.is_last:
                return output.cpu().numpy().astype("<f4").tobytes()
            return self._encode(self._boundary(output, token_ids))

    def forward_backward(
        self,
        header: MessageHeader,
        activation: bytes,
        tokens: bytes,
        targets: bytes,
        *,
        signature: bytes | None = None,
        sender: str | None = None,
        source: tuple[tuple[int, int], ...] | None = None,
    ) -> tuple[bytes, float]:
        """Last stage: loss on `targets`, backward; returns (encoded grad to send left, loss)."""
        if not self.is_last:
            raise ValueError(f"stage {self.stage} is not the last stage: use forward and backward")
        self._begin(header, "forward", signature, sender)
        token_ids = self._tokens(tokens)
        target_ids = self._tokens(targets)
        hidden, leaf = self._input(activation, token_ids)
        logits = self._run(hidden)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), target_ids.view(-1))
        inputs = {"tokens": sha256_hex(tokens), "targets": sha256_hex(targets)}
        if not self.is_first:
            inputs["activation"] = sha256_hex(activation)
        entry = self._pending[header.micro_batch] = _MicroBatch(inputs, {}, loss=loss.item(), source=source)
        grad = self._grads(entry, loss, leaf, None)
        if leaf is not None:
            entry.outputs["grad"] = sha256_hex(grad)
        self._remember(header, [activation, tokens, targets], signature, sender)
        return grad, entry.loss

    def backward(
        self,
        header: MessageHeader,
        grad: bytes,
        *,
        signature: bytes | None = None,
        sender: str | None = None,
    ) -> bytes | None:
        """Backward of one micro-batch given the encoded gradient of this stage's output; returns
        the encoded gradient for the previous stage (None on stage 0)."""
        self._begin(header, "backward", signature, sender)
        entry = self._pending.get(header.micro_batch)
        if entry is None or entry.output is None:
            raise ValueError(f"backward for micro-batch {header.micro_batch} before its forward")
        output_grad = self._decode(grad)
        entry.inputs["grad"] = sha256_hex(grad)
        result = self._grads(entry, entry.output, entry.leaf, output_grad)
        entry.output = entry.leaf = None
        if not self.is_first:
            entry.outputs["grad"] = sha256_hex(result)
        self._remember(header, [grad], signature, sender)
        return None if self.is_first else result

    # -- optimizer step ----------------------------------------------------------------------

    def apply_step(self, round: int, step: int, micro_batches: Sequence[int] | None = None) -> StepRecord:
        """The optimizer step, once the micro-batches of (round, step) have their gradients.

        `micro_batches`: the indices this worker trained when replicas of its stage split a step
        (None = all of them). Their gradients are summed in index order and divided by their count,
        so the update does not depend on arrival order; other pending entries (a micro-batch
        retried on another replica) are dropped. Then clip (per stage) and AdamW at the scheduled rate."""
        trace = self.trace
        if trace is None or trace.round != round or len(trace.records) != step:
            where = "no round yet" if trace is None else f"round {trace.round} step {len(trace.records)}"
            raise ValueError(f"apply_step({round}, {step}) but this stage is at {where}")
        indices = list(range(self.spec.micro_batches)) if micro_batches is None else sorted(micro_batches)
        valid = range(self.spec.micro_batches)
        if not indices or len(set(indices)) != len(indices) or not all(mb in valid for mb in indices):
            raise ValueError(f"micro_batches {indices} must be distinct indices in 0..{valid.stop - 1}")
        missing = [mb for mb in indices if mb not in self._pending or self._pending[mb].grads is None]
        if missing:
            raise ValueError(f"step {step}: no gradients yet for micro-batches {missing}")
        before = self.state_digest()
        ordered = [self._pending[mb] for mb in indices]
        for index, param in enumerate(self.params):
            total = ordered[0].grads[index].clone()
            for entry in ordered[1:]:
                total.add_(entry.grads[index])
            param.grad = total.div_(len(ordered))
        optimizer_step(self.spec, self.optimizer, self.params, round, step)
        self._digest = None
        record = StepRecord(
            round,
            step,
            before,
            self.state_digest(),
            tuple(
                MicroBatchRecord(mb, e.inputs, e.outputs, e.loss, e.source)
                for mb, e in zip(indices, ordered, strict=True)
            ),
        )
        trace.records.append(record)
        kept = sorted(key for key in self._messages if key[0] in indices)
        trace.messages.extend(self._messages[key] for key in kept)
        for key, parts in self._payloads.items():
            if key[0] in indices:
                for part in parts:
                    if part:
                        trace.add_payload(part)
        self._reset_step()
        return record
