"""Canonical stage state: weights + AdamW state in one byte string with a stable layout.

Layout: MAGIC, u64 length, canonical JSON {"step": n, "tensors": [[name, shape], ...]}, then the
tensors' float32 little-endian bytes in that order. Tensors: every parameter by sorted name, then
`exp_avg` and `exp_avg_sq` of every trainable parameter by sorted name (`<name>#exp_avg`). Equal
weights and optimizer state give equal bytes on any machine, so the digest can go on-chain."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from offchain.model.records import canonical_json

MAGIC = b"PMSTATE1"
_MOMENTS = ("exp_avg", "exp_avg_sq")


def _tensors(
    module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[list[tuple[str, torch.Tensor]], int]:
    named = dict(module.named_parameters())
    tensors = [(name, named[name]) for name in sorted(named)]
    step = 0
    for name in sorted(named):
        param = named[name]
        if not param.requires_grad:
            continue
        state = optimizer.state.get(param)
        for moment in _MOMENTS:
            tensors.append((f"{name}#{moment}", state[moment] if state else torch.zeros_like(param)))
        if state:
            step = int(state["step"])
    return tensors, step


def state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer) -> bytes:
    tensors, step = _tensors(module, optimizer)
    header = canonical_json({"step": step, "tensors": [[name, list(t.shape)] for name, t in tensors]})
    parts = [MAGIC, struct.pack(">Q", len(header)), header]
    parts += [t.detach().contiguous().numpy().astype("<f4", copy=False).tobytes() for _, t in tensors]
    return b"".join(parts)


def state_digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer, data: bytes) -> None:
    """Inverse of state_bytes; refuses a state written for another stage or shape."""
    if not data.startswith(MAGIC):
        raise ValueError("not a protocol-models stage state")
    start = len(MAGIC) + 8
    (length,) = struct.unpack(">Q", data[len(MAGIC) : start])
    header = json.loads(data[start : start + length])
    expected, _ = _tensors(module, optimizer)
    layout = [[name, list(t.shape)] for name, t in expected]
    if header["tensors"] != layout:
        raise ValueError("state layout does not match this stage (another stage, model or spec?)")
    offset = start + length
    named = dict(module.named_parameters())
    step = header["step"]
    with torch.no_grad():
        for name, shape in layout:
            count = int(np.prod(shape)) if shape else 1
            array = np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float32)
            offset += 4 * count
            value = torch.from_numpy(array).reshape(shape)
            if "#" not in name:
                named[name].copy_(value)
                continue
            param_name, moment = name.split("#")
            param = named[param_name]
            slot = optimizer.state.setdefault(param, {})
            slot[moment] = value.clone()
            slot["step"] = torch.tensor(float(step))
    if offset != len(data):
        raise ValueError(f"state has {len(data) - offset} trailing bytes")
    if step == 0:
        optimizer.state.clear()


def _split(data: bytes) -> tuple[bytes, np.ndarray]:
    if not data.startswith(MAGIC):
        raise ValueError("not a protocol-models stage state")
    start = len(MAGIC) + 8
    (length,) = struct.unpack(">Q", data[len(MAGIC) : start])
    return data[: start + length], np.frombuffer(data, dtype="<f4", offset=start + length)


def average_state_bytes(states: Sequence[bytes]) -> bytes:
    """Element-wise mean of same-stage replicas' states (weights and Adam moments): summed in list
    order, then divided, in float32. Every replica averaging the same list in the same order gets
    the same bytes. The layouts and optimizer step counters must agree."""
    if not states:
        raise ValueError("nothing to average")
    header, total = _split(states[0])
    total = total.astype(np.float32)
    for other in states[1:]:
        other_header, values = _split(other)
        if other_header != header:
            raise ValueError("replica states differ in layout or optimizer step; cannot average")
        total += values
    total /= np.float32(len(states))
    return header + total.astype("<f4").tobytes()
