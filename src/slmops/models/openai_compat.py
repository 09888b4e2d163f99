"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server, slmops serve)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from slmops.errors import ModelError, ModelUnavailableError
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    FinishReason,
    GenerationParams,
    Usage,
)


def _finish(value: object) -> FinishReason:
    return "length" if value == "length" else "stop"


def _usage(body: dict[str, Any] | None) -> Usage | None:
    if not body:
        return None
    return Usage(int(body.get("prompt_tokens", 0)), int(body.get("completion_tokens", 0)))


class OpenAICompatChatModel:
    """Talks to ``{base_url}/chat/completions`` and ``/completions`` over HTTP with httpx.

    The API key comes from ``api_key``, else ``$SLMOPS_OPENAI_API_KEY``, else
    ``$OPENAI_API_KEY``; servers that need none (llama.cpp, Ollama) work without one.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("SLMOPS_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._model_name = model_name

    @property
    def model_name(self) -> str:
        if self._model_name is None:  # ask the server which model it serves
            models = self._request("GET", "/models").get("data") or []
            if not models:
                raise ModelError(f"{self.base_url} serves no models; name one with '#model'")
            self._model_name = str(models[0]["id"])
        return self._model_name

    @property
    def uri(self) -> str:
        return f"openai:{self.base_url}#{self._model_name or ''}"

    # --- HTTP ----------------------------------------------------------------------------

    def _masked(self, text: str) -> str:
        """``text`` from the server (an error message, a bad reply) without the API key: a
        server may echo the request's headers back, and error messages end up on spans."""
        return text.replace(self._key, "[REDACTED:api_key]") if self._key else text

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("error", {})
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError):
            message = response.text[:300]
        raise ModelError(
            f"{self.base_url} answered HTTP {response.status_code}: {self._masked(str(message))}"
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ModelUnavailableError(f"cannot reach {self.base_url}: {exc}") from exc
        self._raise_for(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ModelError(f"{self.base_url}{path} returned a body that is not JSON") from exc

    def _body(self, params: GenerationParams | None, **extra: Any) -> dict[str, Any]:
        p = params or GenerationParams()
        body: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            **extra,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    # --- protocol ------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        extra: dict[str, Any] = {"messages": [m.model_dump() for m in messages]}
        if json_schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json_schema},
            }
        started = time.perf_counter()
        data = self._request("POST", "/chat/completions", self._body(params, **extra))
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            reply = self._masked(f"{data!r:.300}")
            raise ModelError(f"{self.base_url}: malformed chat completion: {reply}") from exc
        return ChatResult(
            text=text,
            finish_reason=_finish(choice.get("finish_reason")),
            usage=_usage(data.get("usage")) or Usage(0, 0),
            model=self.uri,
            latency_s=time.perf_counter() - started,
        )

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        started = time.perf_counter()
        data = self._request("POST", "/completions", self._body(params, prompt=prompt))
        try:
            choice = data["choices"][0]
            text = choice["text"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            reply = self._masked(f"{data!r:.300}")
            raise ModelError(f"{self.base_url}: malformed completion: {reply}") from exc
        return ChatResult(
            text=text,
            finish_reason=_finish(choice.get("finish_reason")),
            usage=_usage(data.get("usage")) or Usage(0, 0),
            model=self.uri,
            latency_s=time.perf_counter() - started,
        )

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        body = self._body(
            params,
            messages=[m.model_dump() for m in messages],
            stream=True,
            stream_options={"include_usage": True},
        )
        finish: FinishReason = "stop"
        usage: Usage | None = None
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names and keep-alives
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        event = json.loads(payload)
                    except ValueError as exc:
                        raise ModelError(
                            f"{self.base_url}: bad stream event {self._masked(payload)!r:.200}"
                        ) from exc
                    usage = _usage(event.get("usage")) or usage
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            yield ChatChunk(text=text)
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
        except httpx.TransportError as exc:
            raise ModelUnavailableError(f"cannot reach {self.base_url}: {exc}") from exc
        yield ChatChunk(text="", finish_reason=finish, usage=usage or Usage(0, 0))
