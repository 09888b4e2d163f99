"""What the endpoints serve: traced generations from a model or an app stack.

Every generation, streamed or not, is consumed as a stream: then a client that disconnects,
or a shutdown, stops the model between two tokens (closing the stream stops llama.cpp).
Each one is traced into the workspace like a local run, with the request id on its span.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from slmops.apps.citations import SourcedAnswer
from slmops.apps.stack import Stack, to_plain
from slmops.core.llm_call import LLMCall
from slmops.core.runtime import Runtime, get_runtime
from slmops.core.tracing import to_attribute
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    GenerationParams,
)
from slmops.serve.structured import Reply
from slmops.store.traces import get_trace, set_trace_attributes, token_usage

Piece = str | dict[str, Any]
"""What a generation yields to the endpoint: text, or a chat delta (``{"tool_calls": ...}``)."""


class ChatCall(LLMCall):
    """An LLMCall whose input is the request's messages themselves (no template)."""

    def __init__(self, model: ChatModel, params: GenerationParams, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(
            "chat.completions",
            prompt="",
            input_type=list[ChatMessage],
            model=model,
            params=params,
        )

    def render(self, value: Any) -> list[ChatMessage]:
        return list(value)

    def span_attributes(self) -> dict[str, Any]:
        return {**super().span_attributes(), "slmops.request_id": self.request_id}


@dataclass
class Generation:
    """What a finished generation reports, filled in as it streams."""

    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace_id: str = ""
    time_to_first_token_s: float | None = None
    output: Any = None
    extension: dict[str, Any] = field(default_factory=dict)
    answered_by: str = ""  # the model version that answered (registry:NAME@N, or a URI)
    canary: bool = False
    reply: Reply | None = None  # a structured reply read back (tool calls or content)


def stream_chat(
    model: ChatModel,
    messages: list[ChatMessage],
    params: GenerationParams,
    request_id: str,
    report: Generation,
) -> AsyncIterator[str]:
    """Yield the reply's text; ``report`` holds usage, finish reason and trace id at the end."""
    return _reported(ChatCall(_for_this_request(model), params, request_id), messages, report)


class StructuredChatCall(ChatCall):
    """A chat call whose reply is constrained to a JSON schema (``response_format``, tools):
    the model's ``chat(json_schema=...)`` answers whole, in this stream's worker thread (a
    backend whose ``stream`` takes a ``json_schema`` streams it)."""

    def __init__(
        self,
        model: ChatModel,
        params: GenerationParams,
        request_id: str,
        schema: dict[str, Any],
        mode: str,
    ) -> None:
        self.schema = schema  # (before the step freezes itself)
        self.mode = mode
        super().__init__(model, params, request_id)

    def _chunks(self, model: ChatModel, prompt: Any) -> Iterator[ChatChunk]:
        if _streams_schemas(model):
            stream = cast(Any, model).stream
            return cast(Iterator[ChatChunk], stream(prompt, self.params, json_schema=self.schema))
        return _constrained(model, prompt, self.params, self.schema)

    def span_attributes(self) -> dict[str, Any]:
        return {**super().span_attributes(), "slmops.structured_output": self.mode}


def _streams_schemas(model: ChatModel) -> bool:
    """Whether the backend's ``stream`` takes a ``json_schema`` too (beyond the protocol)."""
    try:
        return "json_schema" in inspect.signature(model.stream).parameters
    except (TypeError, ValueError):
        return False


def _constrained(
    model: ChatModel, messages: list[ChatMessage], params: GenerationParams, schema: dict[str, Any]
) -> Iterator[ChatChunk]:
    result = model.chat(messages, params, json_schema=schema)
    yield ChatChunk(text=result.text)
    yield ChatChunk(text="", finish_reason=result.finish_reason, usage=result.usage)


def stream_structured_chat(
    model: ChatModel,
    messages: list[ChatMessage],
    params: GenerationParams,
    schema: dict[str, Any],
    mode: str,
    request_id: str,
    report: Generation,
) -> AsyncIterator[str]:
    """:func:`stream_chat` with the reply constrained to ``schema``."""
    call = StructuredChatCall(_for_this_request(model), params, request_id, schema, mode)
    return _reported(call, messages, report)


def _for_this_request(model: ChatModel) -> ChatModel:
    """A followed alias answers each request with one version, the one it holds now."""
    pinned = getattr(model, "pinned", None)
    return cast(ChatModel, pinned()) if callable(pinned) else model


class CompletionCall(LLMCall):
    """An LLMCall over a raw prompt (no chat template): ``/v1/completions``."""

    def __init__(self, model: ChatModel, params: GenerationParams, request_id: str) -> None:
        self.request_id = request_id
        super().__init__("completions", prompt="", input_type=str, model=model, params=params)

    def _prompt(self, value: Any) -> str:
        return str(value)

    def _prompt_attribute(self, prompt: Any) -> str:
        return to_attribute(prompt)

    def _chunks(self, model: ChatModel, prompt: Any) -> Iterator[ChatChunk]:
        stream_prompt = getattr(model, "stream_prompt", None)
        if stream_prompt is not None:
            return cast(Iterator[ChatChunk], stream_prompt(prompt, self.params))
        return _whole(model, prompt, self.params)

    def span_attributes(self) -> dict[str, Any]:
        return {
            **super().span_attributes(),
            "gen_ai.operation.name": "text_completion",
            "slmops.request_id": self.request_id,
        }


def _whole(model: ChatModel, prompt: str, params: GenerationParams) -> Iterator[ChatChunk]:
    """A backend without raw streaming answers in one piece."""
    result = model.complete(prompt, params)
    yield ChatChunk(text=result.text, finish_reason=result.finish_reason, usage=result.usage)


async def _reported(call: LLMCall, value: Any, report: Generation) -> AsyncIterator[str]:
    """Stream ``call`` on ``value``; ``report`` holds usage, finish reason, time to first token
    and trace id at the end."""
    started = time.perf_counter()

    def finished(result: ChatResult, _trace_id: str) -> None:
        report.answered_by = result.model
        report.finish_reason = result.finish_reason
        report.prompt_tokens = result.usage.prompt_tokens
        report.completion_tokens = result.usage.completion_tokens

    def opened(trace_id: str) -> None:  # at the start, so a stream cut short has it too
        report.trace_id = trace_id

    async for piece in call.astream(value, on_start=opened, on_finish=finished):
        if report.time_to_first_token_s is None:
            report.time_to_first_token_s = time.perf_counter() - started
        report.text += piece
        yield piece


def stream_completion(
    model: ChatModel,
    prompt: str,
    params: GenerationParams,
    request_id: str,
    report: Generation,
) -> AsyncIterator[str]:
    """A raw-text completion, traced as an ``llm`` span like a chat call."""
    return _reported(CompletionCall(_for_this_request(model), params, request_id), prompt, report)


def stack_input(messages: list[ChatMessage]) -> Any:
    """A stack's input from a chat request: the last user message, as JSON when it is a JSON
    object (for stacks with several input fields), else as text."""
    user = [m for m in messages if m.role == "user"]
    text = user[-1].content if user else ""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError):
            # not JSON after all, or JSON no stack could take (nested past the interpreter's
            # limit, NaN, an integer of thousands of digits): the text as it is
            return text
    return text


def _not_json(constant: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON; an answer carrying them could not be sent."""
    raise ValueError(f"{constant} is not JSON")


def answer_text(output: Any) -> str:
    if isinstance(output, SourcedAnswer):
        return output.answer
    if isinstance(output, str):
        return output
    return json.dumps(to_plain(output), ensure_ascii=False)


def stack_extension(stack: Stack, output: Any, trace_id: str, request_id: str) -> dict[str, Any]:
    """The ``slmops`` field of a stack's response: trace, sources and versions."""
    extension: dict[str, Any] = {
        "stack": stack.stack_name,
        "trace_id": trace_id,
        "request_id": request_id,
        "versions": stack.resolved.summary(),
        "output": to_plain(output),
    }
    if isinstance(output, SourcedAnswer):
        extension["citations"] = [c.model_dump() for c in output.citations]
        extension["refused"] = output.refused
        extension["refusal_reason"] = output.reason
    return extension


async def stream_stack(
    stack: Stack, value: Any, request_id: str, report: Generation, *, origin: str | None = None
) -> AsyncIterator[str]:
    """Yield a stack's answer as it is generated (or whole, for stacks that cannot stream);
    ``report`` gets the output, its ``slmops`` extension and the tokens its model calls used."""
    started = time.perf_counter()
    done: list[tuple[Any, str]] = []
    streamed = False
    async for piece in stack.astream(
        value,
        on_finish=lambda out, tid: done.append((out, tid)),
        attributes={
            "slmops.request_id": request_id,
            # a run that is no user's request (the console's playground) says where it came
            # from, so monitoring leaves it out of live traffic
            **({"slmops.origin": origin} if origin else {}),
        },
    ):
        if report.time_to_first_token_s is None:
            report.time_to_first_token_s = time.perf_counter() - started
        streamed = True
        yield piece
    output, trace_id = done[0]
    report.output, report.trace_id = output, trace_id
    report.text = answer_text(output)
    replaced = isinstance(output, SourcedAnswer) and (output.refused or output.extracted)
    if not streamed or replaced:
        # The streamed draft was replaced (a refusal, or the passages' own sentences when the
        # draft failed its check), or nothing streamed (extractive): send the answer.
        yield ("\n\n" if streamed else "") + report.text
    report.extension = stack_extension(stack, output, trace_id, request_id)
    spans = await asyncio.to_thread(_trace_spans, trace_id)  # a database read: off the loop
    report.prompt_tokens, report.completion_tokens = token_usage(spans)
    answered = [s["attributes"].get("gen_ai.response.model") for s in spans if s["kind"] == "llm"]
    report.answered_by = ",".join(dict.fromkeys(a for a in answered if a))


def _trace_spans(trace_id: str) -> list[dict[str, Any]]:
    """The spans of a finished trace, from the store."""
    workspace = get_runtime().workspace
    if workspace is None:
        return []
    return get_trace(workspace.engine, trace_id)[1]


def mark_shadow(runtime: Runtime, trace_id: str, primary_trace_id: str) -> None:
    """Label a shadow run's trace with the trace of the answer it shadowed."""
    if runtime.workspace is not None and trace_id:
        set_trace_attributes(
            runtime.workspace.engine, trace_id, {"slmops.shadow_of": primary_trace_id}
        )
