"""Test doubles for what cannot or need not run for real in a unit test."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from slmops.models.base import ChatChunk, ChatMessage, ChatResult, GenerationParams, Usage


class ScriptedChatModel:
    """Answers with the next scripted reply; records every conversation it was sent."""

    def __init__(self, replies: Sequence[str], uri: str = "fake:scripted") -> None:
        self._replies = list(replies)
        self._uri = uri
        self.calls: list[list[ChatMessage]] = []
        self.schemas: list[dict[str, Any] | None] = []
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self._uri

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        with self._lock:
            self.calls.append(list(messages))
            self.schemas.append(json_schema)
            text = self._replies[min(len(self.calls) - 1, len(self._replies) - 1)]
        return ChatResult(text, "stop", Usage(10, len(text.split())), self._uri, 0.001)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        return self.chat([ChatMessage(role="user", content=prompt)], params)

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        result = self.chat(messages, params)
        for word in result.text.split(" "):
            yield ChatChunk(text=word + " ")
        yield ChatChunk(text="", finish_reason="stop", usage=result.usage)
