"""Wire codecs for the tensors crossing a stage boundary (activations forward, gradients back).

Every codec maps a float32 tensor [..., d_model] to bytes and back, knows the exact payload size
for a shape (so a wrong-sized message is refused before it reaches the model), and reports its
bytes per token. Encodings are deterministic: the same tensor always gives the same bytes, which
the trace digests rely on."""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from offchain.model.spec import CodecSpec

DEFAULT_INT8_BLOCK = 64


class CodecError(ValueError):
    """A payload that cannot be decoded to the requested shape."""


class Codec(ABC):
    name: str

    def __init__(self, d_model: int) -> None:
        self.d_model = d_model

    @abstractmethod
    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        """Exact encoded size of a tensor of `shape` (last dim = d_model)."""

    @abstractmethod
    def encode(self, tensor: torch.Tensor) -> bytes: ...

    @abstractmethod
    def _decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor: ...

    def decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        shape = tuple(shape)
        if not shape or shape[-1] != self.d_model:
            raise CodecError(f"{self.name}: shape {shape} does not end in d_model={self.d_model}")
        expected = self.payload_bytes(shape)
        if len(data) != expected:
            raise CodecError(f"{self.name}: payload has {len(data)} bytes, expected {expected} for {shape}")
        return self._decode(data, shape)

    @property
    def bytes_per_token(self) -> float:
        """Payload bytes for one token's d_model vector (int8 scales amortised over a block)."""
        return self.payload_bytes((1024, self.d_model)) / 1024


class _Cast(Codec):
    """Raw little-endian floats: fp32 is lossless, fp16 halves the bytes."""

    wire: np.dtype

    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape) * self.wire.itemsize

    def encode(self, tensor: torch.Tensor) -> bytes:
        return tensor.detach().contiguous().numpy().astype(self.wire).tobytes()

    def _decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        array = np.frombuffer(data, dtype=self.wire).astype(np.float32)
        return torch.from_numpy(array).reshape(shape)


class DenseCodec(_Cast):
    name = "dense"
    wire = np.dtype("<f4")


class Fp16Codec(_Cast):
    name = "fp16"
    wire = np.dtype("<f2")


class Int8Codec(Codec):
    """Blockwise absmax quantisation: each run of `block_size` values (row-major) is stored as
    int8 q = round(x * 127 / absmax) plus one float32 absmax. Error <= absmax / 254 per value."""

    name = "int8"

    def __init__(self, d_model: int, block_size: int) -> None:
        super().__init__(d_model)
        self.block_size = block_size

    def _blocks(self, shape: tuple[int, ...]) -> tuple[int, int]:
        count = math.prod(shape)
        return count, -(-count // self.block_size)

    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        count, blocks = self._blocks(shape)
        return count + 4 * blocks

    def encode(self, tensor: torch.Tensor) -> bytes:
        flat = tensor.detach().reshape(-1).float()
        count, blocks = self._blocks(tuple(tensor.shape))
        padded = torch.zeros(blocks * self.block_size)
        padded[:count] = flat
        padded = padded.view(blocks, self.block_size)
        absmax = padded.abs().amax(dim=1)
        scale = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
        quantised = torch.round(padded * scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return quantised.reshape(-1)[:count].numpy().tobytes() + absmax.numpy().astype("<f4").tobytes()

    def _decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        count, blocks = self._blocks(shape)
        quantised = torch.zeros(blocks * self.block_size)
        quantised[:count] = torch.from_numpy(
            np.frombuffer(data, dtype=np.int8, count=count).astype(np.float32)
        )
        absmax = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=count).astype(np.float32))
        values = quantised.view(blocks, self.block_size) * (absmax / 127.0)[:, None]
        return values.reshape(-1)[:count].reshape(shape)


def subspace_basis(d_model: int, k: int, seed: int) -> torch.Tensor:
    """A fixed orthonormal d x k basis every party derives from the spec seed (QR in float64,
    rounded once to float32, so tiny LAPACK differences between machines do not show)."""
    digest = hashlib.sha256(f"{seed}:subspace-basis".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    gaussian = torch.randn(d_model, k, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(gaussian)
    return basis.float().contiguous()


class SubspaceCodec(Codec):
    """Carries the k coordinates c = x U of x in span(U), encoded by an inner codec on [..., k]
    (float32 by default, or fp16 / int8 blockwise); decodes to c U^T.

    Encode-then-decode is the orthogonal projection U U^T, so a tensor already in the subspace
    comes back exactly (up to float rounding). The stage trainer applies it to the residual stream
    minus the frozen token + position embedding (recomputed by the receiver from the token ids),
    and to the gradient coming back, which is then the exact gradient of the projected model."""

    name = "subspace"

    def __init__(self, d_model: int, k: int, seed: int, coordinates: Codec) -> None:
        super().__init__(d_model)
        self.k = k
        self.basis = subspace_basis(d_model, k, seed)
        self.coordinates = coordinates

    def _coordinate_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:-1], self.k)

    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        return self.coordinates.payload_bytes(self._coordinate_shape(shape))

    def encode(self, tensor: torch.Tensor) -> bytes:
        return self.coordinates.encode(tensor.detach().float() @ self.basis)

    def _decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        return self.coordinates.decode(data, self._coordinate_shape(shape)) @ self.basis.T


def get_codec(codec: CodecSpec, d_model: int, seed: int = 0) -> Codec:
    """The codec a spec names; `seed` (the spec seed) fixes the subspace basis."""
    if codec.name == "dense":
        return DenseCodec(d_model)
    if codec.name == "fp16":
        return Fp16Codec(d_model)
    if codec.name == "int8":
        return Int8Codec(d_model, codec.block_size or DEFAULT_INT8_BLOCK)
    inner = {"fp32": "dense", "fp16": "fp16", "int8": "int8"}[codec.coordinates or "fp32"]
    coordinates = get_codec(CodecSpec(name=inner, block_size=codec.block_size), codec.k)
    return SubspaceCodec(d_model, codec.k, seed, coordinates)
