"""GPT-style pre-norm decoder, built per pipeline stage the torchtitan way.

The whole model is declared on the meta device (no memory), the stage keeps only the modules it
owns, then materialises and initialises them. Every parameter is initialised from a generator
seeded by (spec seed, parameter name), so a stage's weights do not depend on which other layers
exist in its process: stage i of a split model is bitwise the same as those layers of the
unsplit model."""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from offchain.model.spec import ModelSpec

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, time, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, time, channels))


class MLP(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The full decoder, or one stage of it when some modules were pruned (set to None).

    Input: token ids [B, T] when the embeddings are present, else the residual stream [B, T, d].
    Output: logits [B, T, vocab] when the head is present, else the residual stream."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tok_emb: nn.Embedding | None = nn.Embedding(spec.vocab_size, spec.d_model)
        self.pos_emb: nn.Embedding | None = nn.Embedding(spec.context, spec.d_model)
        # A dict keyed by the global layer index keeps parameter names stable after pruning.
        self.layers = nn.ModuleDict({str(i): Block(spec.d_model, spec.n_heads) for i in range(spec.n_layers)})
        self.norm: nn.LayerNorm | None = nn.LayerNorm(spec.d_model)
        self.head: nn.Linear | None = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        self.frozen: FrozenEmbedding | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.tok_emb is not None else x
        for layer in self.layers.values():
            h = layer(h)
        if self.norm is not None:
            h = self.norm(h)
        if self.head is not None:
            h = self.head(h)
        return h

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_emb(tokens) + self.pos_emb(torch.arange(tokens.shape[1]))
        return h + self.frozen(tokens) if self.frozen is not None else h


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def init_parameter(param: torch.Tensor, name: str, spec: ModelSpec) -> None:
    """GPT-2 init: N(0, 0.02) for matrices and embeddings, scaled by 1/sqrt(2 L) for the
    projections that write into the residual stream; zero biases; unit LayerNorm gains."""
    with torch.no_grad():
        if name.endswith("bias"):
            param.zero_()
        elif ".ln_" in name or name.startswith("norm."):
            param.fill_(1.0)
        else:
            std = INIT_STD / math.sqrt(2 * spec.n_layers) if name.endswith("proj.weight") else INIT_STD
            param.copy_(torch.randn(param.shape, generator=_generator(spec.seed, name)) * std)


def declare_model(spec: ModelSpec, stage: int | None = None) -> GPT:
    """The whole model (stage=None) or only the modules `stage` owns, on the meta device: shapes and
    names without memory (what a validator sizes a stage by before it allocates anything)."""
    with torch.device("meta"):
        model = GPT(spec)
    if stage is not None:
        first, end = spec.stages[stage]
        for index in range(spec.n_layers):
            if not first <= index < end:
                del model.layers[str(index)]
        if stage != 0:
            model.tok_emb = model.pos_emb = None
        if stage != spec.num_stages - 1:
            model.norm = model.head = None
    return model


def build_model(spec: ModelSpec, stage: int | None = None) -> GPT:
    """The whole model (stage=None) or only the modules `stage` owns, initialised from the seed."""
    model = declare_model(spec, stage)
    model.to_empty(device="cpu")
    for name, param in model.named_parameters():
        init_parameter(param, name, spec)
    if spec.codec.name == "subspace" and model.tok_emb is not None:
        model.frozen = FrozenEmbedding(spec)
    return model


class FrozenEmbedding(nn.Module):
    """A second token + position embedding, used with the subspace codec: fixed at its seeded init
    (plain tensors, not parameters: never trained, not in the state), added to the trainable one
    on stage 0. Every stage recomputes it from the token ids, so it reaches every stage at full
    rank while a boundary only carries the rest of the residual stream, in the subspace."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tok = torch.empty(spec.vocab_size, spec.d_model)
        self.pos = torch.empty(spec.context, spec.d_model)
        init_parameter(self.tok, "frozen.tok_emb.weight", spec)
        init_parameter(self.pos, "frozen.pos_emb.weight", spec)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok[tokens] + self.pos[: tokens.shape[1]]
