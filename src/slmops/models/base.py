"""The model protocols every backend implements, and the values they exchange."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy only types Embedder.embed: importing the protocols loads no numpy
    import numpy as np

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class GenerationParams(BaseModel):
    """Sampling settings; the defaults are deterministic so runs and caches are reproducible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens whose KV cache was reused rather than computed: a measure of the work
    # done, not of the answer, so two usages of the same answer compare equal without it.
    cached_tokens: int = field(default=0, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    """A finished generation with what every call reports: tokens, latency, finish reason."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    latency_s: float
    time_to_first_token_s: float | None = None


@dataclass(frozen=True)
class ChatChunk:
    """One piece of a streamed generation. The last chunk carries finish reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@runtime_checkable
class ChatModel(Protocol):
    """A chat/completion model. Implementations must be safe to call from several threads."""

    @property
    def uri(self) -> str: ...

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        """Answer the conversation; with ``json_schema``, constrain the reply to that schema
        where the backend can (grammar-constrained decoding, ``response_format``)."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]: ...

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        """Continue raw text (no chat template)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    @property
    def uri(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input, in the embedder's tokens, before it truncates."""
        ...

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class StreamAccumulator:
    """Collects streamed chunks into a :class:`ChatResult` (used by backends and callers)."""

    model: str
    started: float = field(default_factory=time.perf_counter)
    parts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage(0, 0)

    def add(self, chunk: ChatChunk) -> None:
        if chunk.text:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.parts.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def result(self) -> ChatResult:
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        return ChatResult(
            text="".join(self.parts),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            latency_s=time.perf_counter() - self.started,
            time_to_first_token_s=ttft,
        )
