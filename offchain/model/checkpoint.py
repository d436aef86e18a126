"""A stage checkpoint: one canonical safetensors file of the stage's weights and AdamW moments.

Weights go under their Hugging Face names (`model.layers.3.self_attn.q_proj.weight`), the moments
under `optimizer.exp_avg.<name>` and `optimizer.exp_avg_sq.<name>`; the metadata holds the format,
the spec's CID, the stage and the optimizer step. Every tensor is float32 (master weights and
moments stay fp32 under a bf16 profile).

The bytes are canonical, so their sha256 can go on-chain: tensors in sorted name order, the JSON
header with sorted keys and no whitespace, padded with spaces to 8 bytes. The `safetensors` library
itself is not used to write, because it serialises the metadata from a hash map whose order changes
from one process to the next (seen with safetensors 0.8.0): the same state would get another digest
in another process. Any safetensors reader loads these files.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

FORMAT = "protocol-models/stage-checkpoint/1"
OPTIMIZER_PREFIX = "optimizer."
MOMENTS = ("exp_avg", "exp_avg_sq")
_ALIGN = 8


class CheckpointError(ValueError):
    """Bytes that are not a stage checkpoint of this stage of this spec."""


def encode_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """Canonical safetensors bytes of float32 arrays (see the module docstring)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    names = sorted(tensors)
    for name in names:
        size = tensors[name].size * 4
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    parts = [struct.pack("<Q", len(text)), text]
    parts += [np.ascontiguousarray(tensors[name], dtype="<f4").tobytes() for name in names]
    return b"".join(parts)


def decode_safetensors(data: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, float32 arrays) of a safetensors file; CheckpointError if it is malformed."""
    if len(data) < 8:
        raise CheckpointError("not a safetensors file (shorter than its header length)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise CheckpointError("not a safetensors file (header runs past the end)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError("not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError("not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    start, arrays, covered = 8 + length, {}, 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        if info.get("dtype") != "F32":
            raise CheckpointError(f"tensor {name} is {info.get('dtype')}, stage checkpoints hold F32 only")
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if begin != covered or end - begin != 4 * count or start + end > len(data):
            raise CheckpointError(f"tensor {name}'s data offsets do not tile the data section")
        arrays[name] = np.frombuffer(data, dtype="<f4", count=count, offset=start + begin).reshape(
            info["shape"]
        )
        covered = end
    if start + covered != len(data):
        raise CheckpointError(f"{len(data) - start - covered} bytes after the last tensor")
    return metadata, arrays


def _moment_name(moment: str, name: str) -> str:
    return f"{OPTIMIZER_PREFIX}{moment}.{name}"


def _trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return {name: param for name, param in module.named_parameters() if param.requires_grad}


def state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer, *, spec_cid: str, stage: int) -> bytes:
    """The stage's checkpoint bytes: weights, AdamW moments (zeros before the first step), metadata."""
    tensors, step = {}, 0
    for name, param in module.named_parameters():
        tensors[name] = param.detach().cpu().numpy()
    for name, param in _trainable(module).items():
        state = optimizer.state.get(param)
        for moment in MOMENTS:
            value = state[moment] if state else torch.zeros_like(param)
            tensors[_moment_name(moment, name)] = value.detach().cpu().numpy()
        if state:
            step = int(state["step"])
    metadata = {
        "format": "pt",
        "checkpoint": FORMAT,
        "spec": spec_cid,
        "stage": str(stage),
        "step": str(step),
    }
    return encode_safetensors(tensors, metadata)


def _expected_layout(module: nn.Module) -> dict[str, list[int]]:
    layout = {name: list(param.shape) for name, param in module.named_parameters()}
    for name, param in _trainable(module).items():
        for moment in MOMENTS:
            layout[_moment_name(moment, name)] = list(param.shape)
    return layout


def load_state_bytes(
    module: nn.Module, optimizer: torch.optim.Optimizer, data: bytes, *, spec_cid: str, stage: int
) -> None:
    """Inverse of state_bytes; refuses a checkpoint of another format, spec, stage or layout."""
    metadata, arrays = decode_safetensors(data)
    if metadata.get("checkpoint") != FORMAT:
        raise CheckpointError(
            f"not a protocol-models stage checkpoint (format {metadata.get('checkpoint')!r})"
        )
    if metadata.get("spec") != spec_cid:
        raise CheckpointError(f"checkpoint of spec {metadata.get('spec')}, this stage trains spec {spec_cid}")
    if metadata.get("stage") != str(stage):
        raise CheckpointError(f"checkpoint of stage {metadata.get('stage')}, this is stage {stage}")
    layout = {name: list(array.shape) for name, array in arrays.items()}
    if layout != _expected_layout(module):
        raise CheckpointError("checkpoint tensors do not match this stage's layout")
    step = int(metadata["step"])
    named = dict(module.named_parameters())
    optimizer.state.clear()
    with torch.no_grad():
        for name, param in named.items():
            param.copy_(torch.from_numpy(arrays[name].copy()))
        if step == 0:
            return
        for name, param in _trainable(module).items():
            slot = optimizer.state[param]
            for moment in MOMENTS:
                slot[moment] = torch.from_numpy(arrays[_moment_name(moment, name)].copy()).to(param.device)
            slot["step"] = torch.tensor(float(step))


def weights_of(data: bytes) -> dict[str, torch.Tensor]:
    """The Hugging Face weights of a stage checkpoint (its optimizer moments left out)."""
    _, arrays = decode_safetensors(data)
    return {
        name: torch.from_numpy(array.copy())
        for name, array in arrays.items()
        if not name.startswith(OPTIMIZER_PREFIX)
    }


def _data_section(data: bytes) -> tuple[bytes, np.ndarray]:
    decode_safetensors(data)
    (length,) = struct.unpack("<Q", data[:8])
    return data[: 8 + length], np.frombuffer(data, dtype="<f4", offset=8 + length)


def average_state_bytes(states: Sequence[bytes]) -> bytes:
    """Element-wise mean of same-stage replicas' checkpoints (weights and Adam moments): summed in
    list order, then divided, in float32. Every replica averaging the same list in the same order
    gets the same bytes. The headers (layout, spec, stage, optimizer step) must agree."""
    if not states:
        raise ValueError("nothing to average")
    header, total = _data_section(states[0])
    total = total.astype(np.float32)
    for other in states[1:]:
        other_header, values = _data_section(other)
        if other_header != header:
            raise CheckpointError(
                "replica checkpoints differ in layout, spec or optimizer step; cannot average"
            )
        total += values
    total /= np.float32(len(states))
    return header + total.astype("<f4").tobytes()
