"""The hard limits claims are judged under: how much a stage of a spec may hold, and how many bytes a
claim's manifest, checkpoints, traces and each message in a trace may take.

They are protocol constants and functions of the spec, the same for every validator: a validator
that refused what the others accept would lose its challenges. Each limit is handed to the store
as `max_size`, so content past it is refused while it is fetched (storage/unixfs.py), before it
is decrypted, parsed or allocated; a spec whose stage is over the limit is refused before a single
weight is built (sized on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain.model.codecs import get_codec
from offchain.model.data import token_dtype
from offchain.model.gpt import declare_model
from offchain.model.spec import ModelSpec
from offchain.storage.crypto import HEADER_LEN

KiB, GiB = 1 << 10, 1 << 30
MAX_STAGE_STATE_BYTES = 4 * GiB
"""fp32 weights + AdamW moments of one stage (about 340 M parameters). A validator holds the parent
state, the replayed state and the claimed checkpoint of a stage at once."""
MAX_TRACE_BYTES = 4 * GiB
"""A round's trace (records, signed messages, every input payload): what a replay reads."""
MAX_LAYERS = 1024
"""Declaring a model costs Python objects per layer even on the meta device (Llama 3 405B has 126)."""
STATE_HEADER_BYTES_PER_TENSOR = 512
"""Room for a tensor's name and shape in the canonical state's JSON header (offchain/model/state.py)."""
TRACE_BYTES_PER_MICRO_BATCH = 4 * KiB
"""JSON per micro-batch of a step: its record (digests, loss) and two signed messages (~1.3 KiB)."""
TRACE_FIXED_BYTES = 64 * KiB
MANIFEST_FIXED_BYTES, MANIFEST_BYTES_PER_ROUND = KiB, KiB
"""A claim manifest (offchain/proofs/manifest.py): ~400 bytes of JSON per round it lists."""
AEAD_OVERHEAD = HEADER_LEN + 16
"""What encryption at rest adds to a plaintext: header and GCM tag (offchain/storage/crypto.py)."""


def manifest_bytes(rounds: int) -> int:
    """The largest manifest a claim of `rounds` rounds may have (the chain bounds its rounds)."""
    return MANIFEST_FIXED_BYTES + rounds * MANIFEST_BYTES_PER_ROUND


class LimitExceeded(ValueError):
    """A spec whose stage, or content whose size, is over a protocol limit."""


@dataclass(frozen=True)
class StageLimits:
    """Byte limits for one stage of one spec. `message_bytes`: the largest payload a message may
    carry (an activation or gradient in the spec's codec, or a micro-batch of token ids)."""

    state_bytes: int
    message_bytes: int
    trace_bytes: int

    @property
    def checkpoint_bytes(self) -> int:
        """An encrypted checkpoint as stored."""
        return self.state_bytes + AEAD_OVERHEAD

    @property
    def encrypted_trace_bytes(self) -> int:
        return self.trace_bytes + AEAD_OVERHEAD

    @classmethod
    def of(cls, spec: ModelSpec, stage: int) -> StageLimits:
        """The limits of `stage`; LimitExceeded when the spec asks more of it than the protocol allows."""
        if spec.n_layers > MAX_LAYERS:
            raise LimitExceeded(f"the spec declares {spec.n_layers} layers, above the limit of {MAX_LAYERS}")
        params = list(declare_model(spec, stage).parameters())
        numel = sum(p.numel() for p in params)
        state = 12 * numel + 3 * STATE_HEADER_BYTES_PER_TENSOR * len(params)
        if state > MAX_STAGE_STATE_BYTES:
            raise LimitExceeded(
                f"stage {stage} would hold {numel} parameters ({state} bytes of state with its AdamW "
                f"moments), above the {MAX_STAGE_STATE_BYTES}-byte limit"
            )
        shape = (spec.micro_batch_size, spec.context, spec.d_model)
        activation = get_codec(spec.codec, spec.d_model, spec.seed).payload_bytes(shape)
        tokens = spec.micro_batch_size * spec.context * token_dtype(spec.vocab_size).itemsize
        message = max(activation, tokens)
        per_micro_batch = 4 * message + TRACE_BYTES_PER_MICRO_BATCH  # activation/tokens/targets/grad
        trace = TRACE_FIXED_BYTES + spec.round_steps * spec.micro_batches * per_micro_batch
        if trace > MAX_TRACE_BYTES:
            raise LimitExceeded(
                f"a round of stage {stage} may need a {trace}-byte trace ({spec.round_steps} steps x "
                f"{spec.micro_batches} micro-batches of {message}-byte messages), above the "
                f"{MAX_TRACE_BYTES}-byte limit"
            )
        return cls(state, message, trace)
