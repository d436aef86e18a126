"""The model spec: the JSON document (pinned, its CID on-chain) that fixes everything a stage
worker, a driver and a verifier must agree on to train, route and replay the same model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from offchain.errors import UserError
from offchain.model.profile import ComputeProfile
from offchain.storage.unixfs import file_cid

CodecName = Literal["dense", "fp16", "int8", "subspace"]


class _Strict(BaseModel):
    """Unknown fields are errors: a typo in a spec must not silently train another model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CodecSpec(_Strict):
    """Wire codec on every stage boundary (both directions).

    `block_size` is the int8 quantisation block (one absmax scale per block of values);
    `k` is the subspace rank (coordinates per token crossing a boundary) and `coordinates` how
    those coordinates are sent ("fp32" default, "fp16", or "int8" blockwise with `block_size`)."""

    name: CodecName = "dense"
    block_size: int | None = Field(default=None, gt=0)
    k: int | None = Field(default=None, gt=0)
    coordinates: Literal["fp32", "fp16", "int8"] | None = None

    @model_validator(mode="after")
    def _params_match_codec(self) -> CodecSpec:
        if self.name == "subspace" and self.k is None:
            raise ValueError("codec 'subspace' needs k (coordinates per token)")
        if self.name != "subspace" and self.k is not None:
            raise ValueError(f"codec '{self.name}' takes no k (only 'subspace' does)")
        if self.name != "subspace" and self.coordinates is not None:
            raise ValueError(f"codec '{self.name}' takes no coordinates (only 'subspace' does)")
        quantised = self.name == "int8" or self.coordinates == "int8"
        if not quantised and self.block_size is not None:
            raise ValueError(f"codec '{self.name}' takes no block_size (only int8 quantisation does)")
        return self


class ScheduleSpec(_Strict):
    """The learning rate as a function of the optimizer step t alone (ModelSpec.learning_rate: t
    counts from the first step of round 1, the first round a network trains), so a worker and a
    verifier replaying any step apply the same rate: a linear warmup from
    lr / warmup_steps to lr over the first `warmup_steps` steps, then (with `decay_steps`) a linear
    decay to `min_lr_ratio * lr` at step `decay_steps`, constant after. Linear, not cosine: IEEE
    754 rounds +, * and / the same on every machine, libm's cos need not."""

    warmup_steps: int = Field(default=0, ge=0)
    decay_steps: int | None = Field(default=None, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _decay_after_warmup(self) -> ScheduleSpec:
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps={self.decay_steps} must be above warmup_steps={self.warmup_steps}")
        return self

    def factor(self, t: int) -> float:
        """The multiple of the peak rate at optimizer step `t` (0-based)."""
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if self.decay_steps is None:
            return 1.0
        done = min(t - self.warmup_steps, self.decay_steps - self.warmup_steps)
        return 1.0 - (1.0 - self.min_lr_ratio) * done / (self.decay_steps - self.warmup_steps)


class OptimizerSpec(_Strict):
    """AdamW. `grad_clip` clips each stage's own gradient norm: a global norm would need an extra
    all-reduce across stages every step, which the pipeline does not have. `schedule` (optional)
    varies the rate by step; without it the rate is `lr` throughout."""

    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    schedule: ScheduleSpec | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_schedule(self, handler: SerializerFunctionWrapHandler) -> dict:
        """No `schedule` key when there is none: a spec written before schedules existed keeps
        its canonical bytes, hence its CID (on-chain, and in every checkpoint's metadata)."""
        data = handler(self)
        if data.get("schedule") is None:
            data.pop("schedule", None)
        return data

    def learning_rate(self, t: int) -> float:
        """The rate of optimizer step `t` (0-based, counted over all rounds)."""
        return self.lr if self.schedule is None else self.lr * self.schedule.factor(t)


FIRST_TRAINED_ROUND = 1  # on a chain, round 0 is the seed checkpoint every stage starts from
_CID = r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$"


class LlamaConfigSpec(_Strict):
    """The Hugging Face `LlamaConfig` fields that define the network, under their config.json
    names, so an exported model's config.json is this block plus bookkeeping."""

    vocab_size: int = Field(gt=0, lt=2**32)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=1)
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    initializer_range: float = Field(default=0.02, gt=0)
    hidden_act: Literal["silu"] = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> LlamaConfigSpec:
        heads, kv_heads, hidden = self.num_attention_heads, self.num_key_value_heads, self.hidden_size
        if hidden % heads:
            raise ValueError(f"num_attention_heads={heads} does not divide hidden_size={hidden}")
        if heads % kv_heads:
            raise ValueError(f"num_key_value_heads={kv_heads} does not divide num_attention_heads={heads}")
        if (hidden // heads) % 2:
            raise ValueError(
                f"head size hidden_size/num_attention_heads={hidden // heads} must be even (RoPE)"
            )
        if self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings must be false: embedding and head live on different stages")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class ModelSpec(_Strict):
    """A Llama-family decoder split into pipeline stages, its data, and how it is trained.

    `stages[i] = (first_layer, end_layer)`: stage i owns decoder layers first..end-1; stage 0 also
    owns the token embedding, the last stage the final norm, the head and the loss. Data: the
    tokenizer.json and the data set manifest `pm data prepare` stored, by CID."""

    name: str = "model"
    family: Literal["llama"] = "llama"
    config: LlamaConfigSpec
    stages: list[tuple[int, int]] = Field(min_length=1)
    context: int = Field(gt=1)
    tokenizer_cid: str = Field(pattern=_CID)
    manifest_cid: str = Field(pattern=_CID)
    codec: CodecSpec = CodecSpec()
    optimizer: OptimizerSpec
    round_steps: int = Field(gt=0)
    micro_batches: int = Field(gt=0)
    micro_batch_size: int = Field(gt=0)
    seed: int = Field(ge=0, lt=2**63)
    profile: ComputeProfile = ComputeProfile()

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        layers = self.config.num_hidden_layers
        expected = 0
        for index, (first, end) in enumerate(self.stages):
            if first >= end:
                raise ValueError(f"stage {index} range [{first}, {end}) is empty or reversed")
            if first < expected:
                raise ValueError(f"stage {index} range [{first}, {end}) overlaps layers below {expected}")
            if first > expected:
                raise ValueError(
                    f"layers {expected}..{first - 1} belong to no stage (gap before stage {index})"
                )
            expected = end
        if expected != layers:
            raise ValueError(f"stages cover layers 0..{expected - 1} but num_hidden_layers={layers}")
        if self.context > self.config.max_position_embeddings:
            limit = self.config.max_position_embeddings
            raise ValueError(f"context={self.context} exceeds config.max_position_embeddings={limit}")
        if self.codec.k is not None and self.codec.k > self.config.hidden_size:
            raise ValueError(f"codec k={self.codec.k} exceeds hidden_size={self.config.hidden_size}")
        return self

    def check_tokenizer_vocab(self, size: int) -> None:
        """The embedding and the head must have exactly one row per token of the spec's tokenizer:
        call with the vocabulary size of the tokenizer at `tokenizer_cid` once it is fetched."""
        vocab = self.config.vocab_size
        if size != vocab:
            raise UserError(f"invalid model spec: config.vocab_size={vocab}, the tokenizer has {size} tokens")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def threads(self) -> int:
        """The profile's torch thread count (results differ bitwise between thread counts)."""
        return self.profile.threads

    def learning_rate(self, round: int, step: int) -> float:
        """The optimizer's rate at (round, step): what every worker and replay applies. The schedule
        starts at round FIRST_TRAINED_ROUND; a round before it (round 0 of an off-chain swarm) trains
        at the rates of the first."""
        return self.optimizer.learning_rate(max(round - FIRST_TRAINED_ROUND, 0) * self.round_steps + step)

    def round_and_step(self, t: int) -> tuple[int, int]:
        """The (round, step) of a network's t-th optimizer step (t from 0): what a single-process
        loop passes to train as the network does."""
        rounds, step = divmod(t, self.round_steps)
        return FIRST_TRAINED_ROUND + rounds, step

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batches * self.micro_batch_size * self.context

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace, every default spelled out: equal specs give equal bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    def cid(self) -> str:
        """The CID the spec has once pinned (`pm model create` pins its canonical JSON)."""
        return file_cid(self.canonical_json())

    def check_stage(self, stage: int) -> None:
        if not 0 <= stage < self.num_stages:
            raise UserError(f"stage {stage} out of range: the spec has stages 0..{self.num_stages - 1}")


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "spec"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where}: {message}"


def parse_spec(data: dict, source: str = "spec") -> ModelSpec:
    """Validate a decoded spec; every problem becomes one UserError line naming the field."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        raise UserError(f"invalid model spec {source}: {_first_error(error)}") from None


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"model spec {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"model spec {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"model spec {path} must be a JSON object")
    return parse_spec(data, str(path))
