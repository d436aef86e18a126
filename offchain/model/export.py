"""From stage checkpoints to a Hugging Face model folder.

The union of every stage's weights is a `LlamaForCausalLM` state dict (the stages use its names),
so exporting is: check that each checkpoint is its stage's, merge, load strictly into the
transformers model, and save it with the spec's tokenizer and the family's chat template. The folder
loads with `AutoModelForCausalLM.from_pretrained` and `PreTrainedTokenizerFast.from_pretrained`.

A model trained with the subspace codec had a frozen second token embedding added on stage 0; it is
folded into `embed_tokens`, so the exported model is the trained one without its boundary
compression (for lossless codecs it computes exactly the pipeline's logits).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from offchain.errors import UserError
from offchain.model.chat import CHAT_TEMPLATE
from offchain.model.checkpoint import CheckpointError, decode_safetensors, weights_of
from offchain.model.llama import FrozenEmbedding, hf_config
from offchain.model.spec import ModelSpec

EMBEDDING = "model.embed_tokens.weight"
_SPECIAL_ROLES = ("bos", "eos", "pad")


def merged_weights(spec: ModelSpec, states: Sequence[bytes]) -> dict[str, torch.Tensor]:
    """Every stage's weights in one Hugging Face state dict; each checkpoint must be its stage's."""
    if len(states) != spec.num_stages:
        raise UserError(f"the spec has {spec.num_stages} stages, got {len(states)} checkpoints")
    cid, weights = spec.cid(), {}
    for stage, state in enumerate(states):
        try:
            metadata, _ = decode_safetensors(state)
        except CheckpointError as error:
            raise UserError(f"stage {stage}'s checkpoint: {error}") from None
        found = (metadata.get("spec"), metadata.get("stage"))
        if found != (cid, str(stage)):
            raise UserError(
                f"stage {stage}'s checkpoint is of spec {found[0]} stage {found[1]}, not of spec {cid}"
            )
        weights.update(weights_of(state))
    if spec.codec.name == "subspace":
        weights[EMBEDDING] = weights[EMBEDDING] + FrozenEmbedding(spec).table.cpu()
    return weights


def llama_for_causal_lm(spec: ModelSpec, weights: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """transformers' LlamaForCausalLM of the spec holding exactly `weights` (no key missing or
    unexpected), on the CPU in float32; declared on the meta device, so nothing is initialised twice."""
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_config(spec))
    model.load_state_dict({name: value.cpu() for name, value in weights.items()}, strict=True, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config)  # its buffers were on meta
    return model


def hf_model(spec: ModelSpec, states: Sequence[bytes]) -> LlamaForCausalLM:
    """The whole model of these stage checkpoints as LlamaForCausalLM (CPU, float32, eval mode)."""
    return llama_for_causal_lm(spec, merged_weights(spec, states)).eval()


def _special_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    """bos/eos/pad among the tokenizer's special tokens, by name (`<|eos|>`, `</s>`-style names
    vary; the role is in the name)."""
    specials = [token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special]
    roles = {}
    for role in _SPECIAL_ROLES:
        named = [token for token in specials if role in token.lower()]
        if named:
            roles[f"{role}_token"] = named[0]
    if "eos_token" not in roles and any(token == "</s>" for token in specials):
        roles["eos_token"] = "</s>"
    return roles


def export_model(spec: ModelSpec, states: Sequence[bytes], tokenizer: Tokenizer, out: Path) -> list[str]:
    """Write the Hugging Face folder `out` (config.json, model.safetensors, tokenizer files) and
    return the names written. `out` must not exist or be empty; it appears complete or not at all."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder")
    model = hf_model(spec, states)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=spec.context,
        chat_template=CHAT_TEMPLATE,  # the gateway's, so `apply_chat_template` gives its prompt ids
        **_special_tokens(tokenizer),
    )
    for role in _SPECIAL_ROLES:
        setattr(model.config, f"{role}_token_id", getattr(wrapped, f"{role}_token_id"))
        setattr(model.generation_config, f"{role}_token_id", getattr(wrapped, f"{role}_token_id"))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        wrapped.save_pretrained(staging)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(path.name for path in out.iterdir())
