"""Compute profiles: the device, precision and kernel settings a model trains under, applied in
this one place and hashed into every trace.

Replay is bitwise only when the replayer runs the same kernels in the same order with the same
reductions as the worker. A profile pins everything PyTorch would otherwise choose per machine or
per call: thread count, deterministic algorithms, cuDNN autotuning, TF32 and reduced-precision
reductions, the scaled-dot-product-attention backend and cuBLAS's workspace. Two machines that run
the same profile (same device class, same library versions) reproduce each other's steps; a machine
that cannot run a profile says so (`can_run`) and never judges work done under it.

torch is imported inside the functions: the spec (which holds a profile) is read by commands that
must answer fast, long before any tensor exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

Attention = Literal["math", "flash", "efficient", "cudnn"]
_CUDA_ONLY_ATTENTION = ("efficient", "cudnn")


class ComputeProfile(BaseModel):
    """How a model's numbers are computed (part of the spec, so its CID covers it).

    `dtype`: "fp32", or "bf16" = bf16 autocast for the forward pass while weights, gradients and
    AdamW moments stay float32 (master weights). `attention`: the only SDPA backend enabled (on CPU:
    "math" or "flash"). `cublas_workspace`: CUBLAS_WORKSPACE_CONFIG, which makes cuBLAS's split-K
    reductions deterministic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["fp32", "bf16"] = "fp32"
    threads: int = Field(default=1, gt=0, le=256)
    attention: Attention = "math"
    cublas_workspace: Literal[":4096:8", ":16:8"] = ":4096:8"

    def digest(self) -> str:
        """sha256 of the profile's canonical JSON: what a trace records and a claim names."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)


def can_run(profile: ComputeProfile) -> tuple[bool, str]:
    """Whether this machine can run `profile` (and so replay work done under it), and if not, why."""
    import torch

    if profile.device == "cuda":
        if not torch.cuda.is_available():
            return False, "the profile needs a CUDA device and this machine has none"
        if profile.dtype == "bf16" and not torch.cuda.is_bf16_supported():
            return False, f"the profile needs bf16 and {torch.cuda.get_device_name()} does not support it"
    elif profile.attention in _CUDA_ONLY_ATTENTION:
        return False, f"the profile's attention backend {profile.attention!r} runs only on CUDA"
    return True, "ok"


def apply_profile(profile: ComputeProfile) -> None:
    """Set every process-wide switch the profile fixes. Idempotent and cheap: the trainer calls it
    before each message, so nothing else in the process can leave a different kernel choice behind."""
    import torch

    os.environ["CUBLAS_WORKSPACE_CONFIG"] = profile.cublas_workspace
    torch.use_deterministic_algorithms(True)
    # On by default with the flag above: NaN-fills every torch.empty, a debugging aid costing ~15% of a
    # step. Every kernel we run writes its whole output, so determinism does not depend on it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.fp32_precision = "ieee"  # no TF32 (CUDA) and no implicit bf16 (oneDNN) for fp32 math
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.fp32_precision = "ieee"
    torch.backends.mkldnn.fp32_precision = "ieee"
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    switches = {
        "math": torch.backends.cuda.enable_math_sdp,
        "flash": torch.backends.cuda.enable_flash_sdp,
        "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
        "cudnn": torch.backends.cuda.enable_cudnn_sdp,
    }
    for name, switch in switches.items():
        switch(name == profile.attention)
    if torch.get_num_threads() != profile.threads:
        torch.set_num_threads(profile.threads)  # results differ bitwise across thread counts


def autocast(profile: ComputeProfile) -> AbstractContextManager:
    """The forward pass's precision: bf16 autocast, or nothing for fp32."""
    import torch

    if profile.dtype == "bf16":
        return torch.autocast(profile.device, dtype=torch.bfloat16)
    return nullcontext()
