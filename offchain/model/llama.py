"""Llama-family pipeline stages built from transformers' own modules, split the torchtitan way.

A stage is a contiguous range of `LlamaDecoderLayer`s; stage 0 also owns `embed_tokens`, the last
stage `norm` and `lm_head`. Parameter names are exactly those of `transformers.LlamaForCausalLM`
(`model.layers.5.mlp.up_proj.weight`, `lm_head.weight`, ...), so the union of every stage's
weights is a Hugging Face checkpoint. Each stage builds its own rotary embedding and causal mask:
nothing but the residual stream crosses a stage boundary.

Every parameter is initialised from a generator seeded by (spec seed, parameter name), so a stage's
weights do not depend on which other layers exist in its process, nor on the device: stage i of a
split model is bitwise the same as those layers of the unsplit one.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from transformers import Cache, LlamaConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from offchain.model.spec import ModelSpec

ATTENTION_IMPLEMENTATION = "sdpa"  # its backend is pinned by the compute profile


def hf_config(spec: ModelSpec) -> LlamaConfig:
    """The transformers config of the whole model (what an exported config.json holds)."""
    c = spec.config
    config = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        initializer_range=c.initializer_range,
        hidden_act=c.hidden_act,
        attention_bias=c.attention_bias,
        mlp_bias=c.mlp_bias,
        tie_word_embeddings=c.tie_word_embeddings,
        attention_dropout=0.0,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    config._attn_implementation = ATTENTION_IMPLEMENTATION
    return config


class _Body(nn.Module):
    """`LlamaModel`'s parameters (named `model.*`) that one stage owns."""

    def __init__(self, config: LlamaConfig, layers: range, first: bool, last: bool) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size) if first else None
        # Keyed by the global layer index: `layers.5` is named as in the unsplit model.
        self.layers = nn.ModuleDict({str(i): LlamaDecoderLayer(config, i) for i in layers})
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if last else None


class LlamaStage(nn.Module):
    """One pipeline stage. Input: token ids [B, T] on stage 0, else the residual stream [B, T, H].
    Output: logits [B, T, V] on the last stage, else the residual stream."""

    def __init__(self, config: LlamaConfig, layers: range, first: bool, last: bool) -> None:
        super().__init__()
        self.config = config
        self.model = _Body(config, layers, first, last)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False) if last else None
        self.rotary_emb: LlamaRotaryEmbedding | None = None
        self.frozen: FrozenEmbedding | None = None

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | list[torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        """Training and evaluation pass `x` alone: positions 0..T-1, causal. Serving with a KV cache
        (offchain/model/kv.py) passes each row's positions [B, T], its attention's masks and the
        cache the layers extend."""
        hidden = x
        if self.model.embed_tokens is not None:
            hidden = self.model.embed_tokens(x)
            if self.frozen is not None:
                hidden = hidden + self.frozen(x)
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        position_embeddings = self.rotary_emb(hidden, position_ids)
        mask = attention_mask
        if mask is None:
            # Built here on every path: `None` for SDPA (which then runs with is_causal), an explicit
            # mask for eager attention, which would silently attend to the future without one.
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=None,
                past_key_values=None,
                position_ids=position_ids,
            )
        for layer in self.model.layers.values():
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                position_embeddings=position_embeddings,
            )
        if self.lm_head is not None:
            hidden = self.lm_head(self.model.norm(hidden))
        return hidden


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def init_parameter(param: torch.Tensor, name: str, spec: ModelSpec) -> None:
    """Hugging Face's Llama init: N(0, initializer_range) for matrices and embeddings, zero biases,
    unit RMSNorm gains; drawn on the CPU from the (seed, name) generator, then copied."""
    with torch.no_grad():
        if name.endswith("bias"):
            param.zero_()
        elif name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            values = torch.randn(param.shape, generator=_generator(spec.seed, name))
            param.copy_(values * spec.config.initializer_range)


def declare_stage(spec: ModelSpec, stage: int) -> LlamaStage:
    """The modules `stage` owns on the meta device: names and shapes without memory (what a
    validator sizes a stage by before it allocates anything)."""
    spec.check_stage(stage)
    first, end = spec.stages[stage]
    with torch.device("meta"):
        return LlamaStage(hf_config(spec), range(first, end), stage == 0, stage == spec.num_stages - 1)


def build_stage(spec: ModelSpec, stage: int) -> LlamaStage:
    """The modules `stage` owns, on the profile's device, initialised from the seed. Declared on
    the meta device first, so no memory is spent on default initialisations."""
    module = declare_stage(spec, stage)
    config = module.config
    device = spec.profile.torch_device
    module.to_empty(device=device)
    for name, param in module.named_parameters():
        init_parameter(param, name, spec)
    with torch.device(device):
        module.rotary_emb = LlamaRotaryEmbedding(config)
    if spec.codec.name == "subspace" and stage == 0:
        module.frozen = FrozenEmbedding(spec)
    return module


class FrozenEmbedding(nn.Module):
    """A second token embedding, used with the subspace codec: fixed at its seeded init (a buffer,
    never trained, not in the checkpoint), added to the trainable one on stage 0. Every stage
    recomputes it from the token ids, so token identity reaches every stage at full rank while a
    boundary carries only the rest of the residual stream, in the subspace."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        table = torch.empty(spec.config.vocab_size, spec.config.hidden_size)
        init_parameter(table, "frozen.embed_tokens.weight", spec)
        self.register_buffer("table", table.to(spec.profile.torch_device), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]
