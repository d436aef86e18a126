"""The gateway's OpenAI-compatible shapes: request bodies, response and stream-chunk objects, errors.

Requests follow the OpenAI API reference for completions and chat completions, as far as a causal
model served by this protocol can honour them: `n` must be 1, and a field it cannot honour
(logprobs, tools, penalties, ...) is refused by name, never silently ignored. `top_k` is accepted
as in vLLM. OpenAI's defaults hold: temperature 1, top_p 1, max_tokens 16 for completions and the
rest of the context (within the gateway's limit) for chat.

Responses carry the standard fields plus what a paid, on-chain model adds: `request_id` (the id
that was paid), `amount` (what it paid), `round` and `rounds` (the model's finalized checkpoint
round, and per stage), and per choice `token_ids`. Errors are OpenAI's
`{"error": {"message", "type", "param", "code"}}`; a 402 carries the quote to pay in
`error.quote` (the openai client exposes it as `APIStatusError.body["quote"]`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from offchain.model.chat import Message
from offchain.model.generate import Completion

MAX_STOP_SEQUENCES = 4


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error shape (`extra` goes into the error object)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str,
        code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param, self.extra = status, kind, code, param, extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        error = {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}
        return {"error": {**error, **self.extra}}


def invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> ApiError:
    return ApiError(status, message, kind="invalid_request_error", param=param, code=code)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str | int | None = Field(
        default=None, description="the model id of /v1/models (default: this gateway's)"
    )
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | int = Field(default=1.0, ge=0, le=2)
    top_p: float | int = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    user: str | None = None

    object_name: ClassVar[str]
    chunk_name: ClassVar[str]
    id_prefix: ClassVar[str]

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES or any(not text for text in stops):
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} non-empty stop sequences")
        return stop

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def choice(self, completion: Completion) -> dict[str, Any]:
        raise NotImplementedError

    def delta(
        self, text: str, token_ids: list[int], finish_reason: str | None, first: bool
    ) -> dict[str, Any]:
        raise NotImplementedError


class CompletionRequest(_Request):
    """POST /v1/completions."""

    prompt: str
    object_name = chunk_name = "text_completion"
    id_prefix = "cmpl-"

    def requested_tokens(self) -> int:
        return 16 if self.max_tokens is None else self.max_tokens  # OpenAI's default for completions

    def choice(self, completion: Completion) -> dict[str, Any]:
        return {
            "index": 0,
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "logprobs": None,
            "token_ids": completion.token_ids,
        }

    def delta(
        self, text: str, token_ids: list[int], finish_reason: str | None, first: bool
    ) -> dict[str, Any]:
        return {
            "index": 0,
            "text": text,
            "finish_reason": finish_reason,
            "logprobs": None,
            "token_ids": token_ids,
        }


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def message(self) -> Message:
        """The template's message: a developer message is a system message, text parts are joined."""
        content = (
            self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        )
        return Message(role="system" if self.role == "developer" else self.role, content=content)


class ChatRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    object_name = "chat.completion"
    chunk_name = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def conversation(self) -> list[Message]:
        return [message.message() for message in self.messages]

    def choice(self, completion: Completion) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": completion.text},
            "finish_reason": completion.finish_reason,
            "logprobs": None,
            "token_ids": completion.token_ids,
        }

    def delta(
        self, text: str, token_ids: list[int], finish_reason: str | None, first: bool
    ) -> dict[str, Any]:
        delta: dict[str, str] = {"role": "assistant", "content": text} if first else {"content": text}
        if finish_reason is not None and not text:
            delta = {}
        return {
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": None,
            "token_ids": token_ids,
        }


def parse(data: object, schema: type[_Request]) -> _Request:
    """A request body, or a 400 naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise invalid(f"{where}: {first['msg']}", param=where) from None


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(
    request: _Request, request_id: str, model: str, fingerprint: str, *, chunk: bool
) -> dict[str, Any]:
    """The fields every response object and stream chunk of one completion share."""
    return {
        "id": request.id_prefix + request_id[2:26],
        "object": request.chunk_name if chunk else request.object_name,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
    }
