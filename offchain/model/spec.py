"""The model spec: the JSON document (pinned, its CID on-chain) that fixes everything a stage
worker, a driver and a verifier must agree on to train, route and replay the same model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offchain.errors import UserError

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


class OptimizerSpec(_Strict):
    """AdamW. `grad_clip` clips each stage's own gradient norm: a global norm would need an extra
    all-reduce across stages every step, which the pipeline does not have."""

    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)


class DatasetSpec(_Strict):
    """A shipped text corpus, addressed by the sha256 of its uncompressed bytes."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


_CID = r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$"


class ModelSpec(_Strict):
    """A GPT-style pre-norm decoder split into pipeline stages, plus how it is trained.

    `stages[i] = (first_layer, end_layer)`: stage i owns transformer blocks first..end-1; stage 0
    also owns the embeddings, the last stage the final norm, the head and the loss. Data: either
    `tokenizer_cid` + `manifest_cid` (a tokenizer.json and a dataset manifest in the store, from
    `pm data prepare`) or a shipped byte-level `dataset`."""

    name: str = "model"
    vocab_size: int = Field(default=256, gt=0, le=65536)
    d_model: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    context: int = Field(gt=1)
    stages: list[tuple[int, int]] = Field(min_length=1)
    codec: CodecSpec = CodecSpec()
    optimizer: OptimizerSpec
    round_steps: int = Field(gt=0)
    micro_batches: int = Field(gt=0)
    micro_batch_size: int = Field(gt=0)
    tokenizer_cid: str | None = Field(default=None, pattern=_CID)
    manifest_cid: str | None = Field(default=None, pattern=_CID)
    dataset: DatasetSpec | None = None
    seed: int = Field(ge=0, lt=2**63)
    threads: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
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
        if expected != self.n_layers:
            raise ValueError(f"stages cover layers 0..{expected - 1} but n_layers={self.n_layers}")
        if self.codec.k is not None and self.codec.k > self.d_model:
            raise ValueError(f"codec k={self.codec.k} exceeds d_model={self.d_model}")
        prepared = (self.tokenizer_cid is not None, self.manifest_cid is not None)
        if prepared[0] != prepared[1]:
            raise ValueError("tokenizer_cid and manifest_cid go together (both from `pm data prepare`)")
        if prepared[0] == (self.dataset is not None):
            raise ValueError("name the data: tokenizer_cid + manifest_cid, or a shipped byte-level dataset")
        return self

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batches * self.micro_batch_size * self.context

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace, every default spelled out: equal specs give equal bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

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
