"""What travels between the driver and the stage servers, and how it is framed on hivemind P2P.

Every RPC is a msgpack document cut into `BytesValue` chunks and sent over a hivemind P2P
*stream* handler in both directions. Streams, not unary calls: on loopback a 1 MiB unary call
takes ~31 ms through the daemons' persistent connection, a stream echo of the same bytes ~19 ms,
and unary calls are capped at 2 MiB while a stage's state is larger.

A completion's `infer` stream carries many requests and replies, each a length-prefixed frame
(`FrameReader`), for as long as the completion lasts (offchain/swarm/sessions.py).

Replies are length-prefixed and the *caller* closes the stream once it has the whole reply: when
the server closed first, the libp2p daemon dropped the tail of the reply about once in 300 calls
on loopback (measured: 6 lost replies in 2000 sequential calls; 0 in 3000 with this framing).

A pipeline message (forward to stage s: activation + token ids [+ targets], signed by stage s-1 or,
for stage 0, by the driver; backward to stage s: gradient, signed by stage s+1) travels as
{"header", "parts", "sender", "signature"}; the signature covers the header and the digest of
`offchain.model.records.message_payload(*parts)`, so the receiver can keep it in its step trace
and any verifier can later prove who sent which bytes. The header names the deployment (chain id
and WorkLedger address) too, so a signature is worth nothing on another chain or deployment.

Limits: every request and reply has a size limit (`Limits`: 64 KiB for control, what the
spec's shapes need for activations and logits, the stage's own state size for state transfers) and a
time limit; a peer that sends more, or too slowly, is cut off with a WireError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from google.protobuf.wrappers_pb2 import BytesValue

if TYPE_CHECKING:
    from offchain.model.spec import ModelSpec

CHUNK_BYTES = 1 << 20
_LENGTH_BYTES = 8
CONTROL_BYTES = 64 << 10
REQUEST_SECONDS = 60.0
"""How long a peer may take to send a whole request (then it is cut off)."""


@dataclass(frozen=True)
class Limits:
    """Size limits of one stage's RPCs, in bytes."""

    pipeline: int  # a forward/backward/infer request or reply: activations, grads, tokens, logits
    state: int  # a stage state (a `state` reply; the stage's own state size with room to spare)

    @classmethod
    def of(cls, spec: ModelSpec, state_size: int) -> Limits:
        rows = spec.micro_batch_size * spec.context
        # fp32 per token (activation, gradient or logits), plus its token id and target
        widest = 4 * max(spec.config.hidden_size, spec.config.vocab_size) + 16
        return cls(pipeline=2 * rows * widest + CONTROL_BYTES, state=2 * state_size + (1 << 20))

    def request(self, method: str) -> int:
        """What a request to `method` may weigh: only pipeline RPCs carry tensors."""
        return self.pipeline if method in PIPELINE_METHODS else CONTROL_BYTES

    def reply(self, method: str) -> int:
        if method == "state":
            return self.state
        return self.pipeline if method in PIPELINE_METHODS else CONTROL_BYTES


PIPELINE_METHODS = frozenset({"forward", "forward_backward", "backward", "infer"})


def infer_frame_limit(spec: ModelSpec) -> int:
    """The largest frame of an `infer` stream either way: a whole context's steps at once (a
    re-prefill), each position's activation or logits in fp32, with room for the framing."""
    widest = 4 * max(spec.config.hidden_size, spec.config.vocab_size) + 64
    return spec.context * widest + CHUNK_BYTES


class WireError(ValueError):
    """A message that does not parse or does not match what the receiver expects."""


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise WireError(f"undecodable message: {error}") from None
    if not isinstance(obj, dict):
        raise WireError("a message must be a map")
    return obj


def to_chunks(data: bytes) -> Iterable[BytesValue]:
    view = memoryview(data)
    if not data:
        yield BytesValue(value=b"")
    for offset in range(0, len(data), CHUNK_BYTES):
        yield BytesValue(value=bytes(view[offset : offset + CHUNK_BYTES]))


async def stream_chunks(data: bytes) -> AsyncIterator[BytesValue]:
    for chunk in to_chunks(data):
        yield chunk


async def join_chunks(stream: AsyncIterator[BytesValue], limit: int) -> bytes:
    """A whole request; WireError as soon as it grows past `limit` bytes (nothing more is read)."""
    buffer = bytearray()
    async for chunk in stream:
        buffer += chunk.value
        if len(buffer) > limit:
            raise WireError(f"request larger than {limit} bytes")
    return bytes(buffer)


def framed_chunks(data: bytes) -> Iterable[BytesValue]:
    return to_chunks(len(data).to_bytes(_LENGTH_BYTES, "big") + data)


async def read_framed(stream: AsyncIterator[BytesValue], limit: int) -> bytes | None:
    """One length-prefixed reply; closes the stream once it is complete. None if it ended early;
    WireError if it announces (or sends) more than `limit` bytes."""
    buffer = bytearray()
    need = None
    try:
        async for chunk in stream:
            buffer += chunk.value
            if need is None and len(buffer) >= _LENGTH_BYTES:
                need = int.from_bytes(buffer[:_LENGTH_BYTES], "big")
                if need > limit:
                    raise WireError(f"reply of {need} bytes, more than the {limit} allowed")
            if need is not None and len(buffer) >= _LENGTH_BYTES + need:
                return bytes(buffer[_LENGTH_BYTES:])
        return None
    finally:
        await stream.aclose()


class FrameReader:
    """Length-prefixed frames, one after another, from one stream of chunks."""

    def __init__(self, stream: AsyncIterator[BytesValue], limit: int) -> None:
        self.stream, self.limit = stream, limit
        self.buffer = bytearray()

    async def read(self) -> bytes | None:
        """The next frame; None when the stream ends between frames. WireError for a frame larger
        than `limit` bytes (nothing past its length is read) or a stream that ends inside a frame."""
        while True:
            if len(self.buffer) >= _LENGTH_BYTES:
                need = int.from_bytes(self.buffer[:_LENGTH_BYTES], "big")
                if need > self.limit:
                    raise WireError(f"a frame of {need} bytes, more than the {self.limit} allowed")
                end = _LENGTH_BYTES + need
                if len(self.buffer) >= end:
                    frame = bytes(self.buffer[_LENGTH_BYTES:end])
                    del self.buffer[:end]
                    return frame
            chunk = await anext(self.stream, None)
            if chunk is None:
                if self.buffer:
                    raise WireError("the stream ended inside a frame")
                return None
            self.buffer += chunk.value
