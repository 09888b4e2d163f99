"""What the endpoints serve: traced generations from a model or an app stack.

Every generation, streamed or not, is consumed as a stream: then a client that disconnects,
or a shutdown, stops the model between two tokens (closing the stream stops llama.cpp).
Each one is traced into the workspace like a local run, with the request id on its span.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import StatusCode

from slmops.apps.citations import SourcedAnswer
from slmops.apps.stack import Stack, to_plain
from slmops.core.llm_call import LLMCall
from slmops.core.runtime import get_runtime
from slmops.core.step import StepState
from slmops.core.threads import iterate_blocking, run_blocking
from slmops.core.tracing import to_attribute, trace_id_of
from slmops.models.base import ChatMessage, ChatModel, ChatResult, GenerationParams
from slmops.store.traces import get_trace, token_usage


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


async def stream_chat(
    model: ChatModel,
    messages: list[ChatMessage],
    params: GenerationParams,
    request_id: str,
    report: Generation,
) -> AsyncIterator[str]:
    """Yield the reply's text; ``report`` holds usage, finish reason and trace id at the end."""
    call = ChatCall(model, params, request_id)
    started = time.perf_counter()

    def finished(result: ChatResult, trace_id: str) -> None:
        report.finish_reason = result.finish_reason
        report.prompt_tokens = result.usage.prompt_tokens
        report.completion_tokens = result.usage.completion_tokens
        report.trace_id = trace_id

    async for piece in call.astream(messages, on_finish=finished):
        if report.time_to_first_token_s is None:
            report.time_to_first_token_s = time.perf_counter() - started
        report.text += piece
        yield piece


async def stream_completion(
    model: ChatModel,
    prompt: str,
    params: GenerationParams,
    request_id: str,
    report: Generation,
) -> AsyncIterator[str]:
    """A raw-text completion, traced as an ``llm`` span like a chat call."""
    runtime = get_runtime()
    span = runtime.tracer.start_span(
        "completions",
        root=True,
        attributes={
            "slmops.step.kind": "llm",
            "slmops.step.path": "completions",
            "slmops.request_id": request_id,
            "gen_ai.operation.name": "text_completion",
            "gen_ai.request.model": model.uri,
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.prompt": to_attribute(prompt),
        },
    )
    report.trace_id = trace_id_of(span)
    started = time.perf_counter()
    span.add_event("state", {"state": StepState.RUNNING.value})
    try:
        stream_prompt = getattr(model, "stream_prompt", None)
        if stream_prompt is not None:
            async for chunk in iterate_blocking(stream_prompt(prompt, params)):
                if chunk.text:
                    if report.time_to_first_token_s is None:
                        report.time_to_first_token_s = time.perf_counter() - started
                    report.text += chunk.text
                    yield chunk.text
                if chunk.usage is not None:
                    report.prompt_tokens = chunk.usage.prompt_tokens
                    report.completion_tokens = chunk.usage.completion_tokens
                if chunk.finish_reason:
                    report.finish_reason = chunk.finish_reason
        else:  # backends without raw streaming answer in one piece
            result = await run_blocking(model.complete, prompt, params)
            report.time_to_first_token_s = time.perf_counter() - started
            report.text, report.finish_reason = result.text, result.finish_reason
            report.prompt_tokens = result.usage.prompt_tokens
            report.completion_tokens = result.usage.completion_tokens
            yield result.text
        span.set_attribute("gen_ai.usage.input_tokens", report.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", report.completion_tokens)
        span.set_attribute("slmops.llm.response", to_attribute(report.text))
        if report.time_to_first_token_s is not None:
            span.set_attribute(
                "slmops.llm.time_to_first_token_ms", report.time_to_first_token_s * 1000
            )
        span.add_event("state", {"state": StepState.COMPLETE.value})
        span.set_attribute("slmops.state", StepState.COMPLETE.value)
    except BaseException as exc:
        state = "cancelled" if isinstance(exc, GeneratorExit) else StepState.FAILED.value
        span.add_event("state", {"state": state})
        span.set_attribute("slmops.state", state)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        span.end()


def stack_input(messages: list[ChatMessage]) -> Any:
    """A stack's input from a chat request: the last user message, as JSON when it is a JSON
    object (for stacks with several input fields), else as text."""
    user = [m for m in messages if m.role == "user"]
    text = user[-1].content if user else ""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


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
    stack: Stack, value: Any, request_id: str, report: Generation
) -> AsyncIterator[str]:
    """Yield a stack's answer as it is generated (or whole, for stacks that cannot stream);
    ``report`` gets the output, its ``slmops`` extension and the tokens its model calls used."""
    started = time.perf_counter()
    done: list[tuple[Any, str]] = []
    streamed = False
    async for piece in stack.astream(value, on_finish=lambda out, tid: done.append((out, tid))):
        if report.time_to_first_token_s is None:
            report.time_to_first_token_s = time.perf_counter() - started
        streamed = True
        yield piece
    output, trace_id = done[0]
    report.output, report.trace_id = output, trace_id
    report.text = answer_text(output)
    if not streamed or (isinstance(output, SourcedAnswer) and output.refused):
        # The streamed draft was replaced (a refusal), or nothing streamed: send the answer.
        yield ("\n\n" if streamed else "") + report.text
    report.extension = stack_extension(stack, output, trace_id, request_id)
    report.prompt_tokens, report.completion_tokens = _trace_usage(trace_id)


def _trace_usage(trace_id: str) -> tuple[int, int]:
    """Tokens used by every model call of a finished trace, from the store."""
    workspace = get_runtime().workspace
    if workspace is None:
        return 0, 0
    return token_usage(get_trace(workspace.engine, trace_id)[1])
