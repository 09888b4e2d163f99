"""LLMCall: render a prompt from the input, call a chat model, parse and validate the reply."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, cast

from jinja2 import StrictUndefined, TemplateError
from opentelemetry import trace as otel_trace
from pydantic import BaseModel, ValidationError

from slmops.core.runtime import get_runtime
from slmops.core.step import Step, StepState, current_step_path
from slmops.core.threads import iterate_blocking, run_blocking
from slmops.core.tracing import to_attribute, trace_id_of
from slmops.core.typing_rules import adapter, type_name
from slmops.errors import (
    StepDefinitionError,
    StepInputError,
    StepOutputError,
)
from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    GenerationParams,
    StreamAccumulator,
    Usage,
)
from slmops.models.loading import load_chat_model
from slmops.models.templating import BoundedSandbox, render_bounded

# Immutable: a template reads its input; it cannot append to, pop or clear the lists and
# dicts it is given (a step's passages are the next step's passages too). Bounded: a render
# that runs too long or builds too much text is refused (see slmops.models.templating).
_templates = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
_JSON_BLOCK = re.compile(r"\{.*\}|\[.*\]", re.DOTALL)


def _template_context(value: Any) -> dict[str, Any]:
    """Template variables: a model's fields (plus ``input``), or ``input`` for other values."""
    if isinstance(value, BaseModel):
        return {**{name: getattr(value, name) for name in type(value).model_fields}, "input": value}
    if isinstance(value, dict):
        return {**value, "input": value}
    return {"input": value}


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (models like to wrap JSON in prose)."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        match = _JSON_BLOCK.search(stripped)
        if match is None:
            raise ValueError("the reply contains no JSON object") from None
        return json.loads(match.group(0))


def close_truncated_json(text: str) -> str | None:
    """A JSON prefix cut off by ``max_tokens`` (what grammar-constrained decoding leaves when a
    small model runs on inside a string) closed into a whole value: the open string ended, a
    dangling ``,`` or ``"key":`` dropped, open arrays and objects closed. None when the cut
    falls elsewhere (inside a number or literal) or the text is not such a prefix."""
    closers: list[str] = []
    in_string = escaped = False
    last_structural = -1  # index after the last complete value or opening bracket
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                last_structural = index + 1
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
            last_structural = index + 1
        elif char in "}]":
            if not closers or closers.pop() != char:
                return None
            last_structural = index + 1
        elif char in ",:" or char.isspace():
            continue
        else:
            last_structural = -1  # a number or literal: cannot tell where it would end
    if not closers:
        return None
    if in_string:
        body = text[:-1] if escaped else text
        body += '"'
    elif last_structural < 0:
        return None
    else:
        body = text[:last_structural]
    body = body.rstrip().removesuffix(",")  # a separator with nothing after it yet
    candidate = body + "".join(reversed(closers))
    try:
        json.loads(candidate)
    except ValueError:
        return None
    return candidate


class LLMCall(Step[Any, Any]):
    """Call a chat model with a Jinja2 ``prompt`` (and optional ``system`` prompt) rendered
    from the input. With ``output_type=str`` the reply text is the output; with a structured
    type (a pydantic model, list, ...) the model is asked for JSON matching its schema
    (constrained by a grammar where the backend supports it), and a reply that does not parse
    or validate is sent back with the error up to ``parse_retries`` times."""

    kind: ClassVar[str] = "llm"
    shape: ClassVar[str] = "hexagon"

    def __init__(
        self,
        name: str,
        *,
        prompt: str,
        input_type: Any,
        output_type: Any = str,
        model: str | ChatModel = "local:smollm2-135m",
        system: str | None = None,
        params: GenerationParams | None = None,
        parse_retries: int = 2,
        prompt_version: str | None = None,
        **options: Any,
    ) -> None:
        try:
            self._user_template = _templates.from_string(prompt)
            self._system_template = _templates.from_string(system) if system else None
        except TemplateError as exc:
            raise StepDefinitionError(f"prompt template does not parse: {exc}", path=name) from exc
        except (RecursionError, SyntaxError):
            # Jinja parses recursively, and the Python it generates has its own nesting
            # limits ("too many levels of indentation" at 100 nested blocks).
            raise StepDefinitionError("prompt template nests too deeply", path=name) from None
        if parse_retries < 0:
            raise StepDefinitionError("parse_retries must be >= 0", path=name)
        self.prompt = prompt
        self.system = system
        self.params = params or GenerationParams()
        self.parse_retries = parse_retries
        self.prompt_version = prompt_version
        self.model_uri = model if isinstance(model, str) else model.uri
        self._model = None if isinstance(model, str) else model
        self.structured = output_type is not str
        self._schema = adapter(output_type).json_schema() if self.structured else None
        super().__init__(name, input_type=input_type, output_type=output_type, **options)

    # --- identity ------------------------------------------------------------------------

    def cache_identity(self) -> dict[str, Any]:
        template = f"{self.system or ''}\x00{self.prompt}"
        return {
            **super().cache_identity(),
            "model": self.model_uri,
            "params": self.params.model_dump(mode="json"),
            "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "schema": self._schema,
        }

    def span_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": self.model_uri,
            "gen_ai.request.max_tokens": self.params.max_tokens,
            "gen_ai.request.temperature": self.params.temperature,
            "gen_ai.request.top_p": self.params.top_p,
        }
        if self.prompt_version:
            attributes["slmops.prompt.version"] = self.prompt_version
        return attributes

    def graph_label(self) -> str:
        return f"{super().graph_label()}\nmodel: {self.model_uri}"

    # --- running -------------------------------------------------------------------------

    def model(self) -> ChatModel:
        return self._model if self._model is not None else load_chat_model(self.model_uri)

    async def _loaded_model(self) -> ChatModel:
        """The given model, or the URI's, loaded off the event loop."""
        if self._model is not None:
            return self._model
        return await run_blocking(load_chat_model, self.model_uri)

    def render(self, value: Any) -> list[ChatMessage]:
        """The messages this step sends for ``value`` (useful for debugging prompts)."""
        context = _template_context(value)
        try:
            messages = []
            if self._system_template is not None:
                messages.append(
                    ChatMessage(
                        role="system", content=render_bounded(self._system_template, context)
                    )
                )
            user = render_bounded(self._user_template, context)
        except TemplateError as exc:
            raise StepInputError(
                f"prompt cannot be rendered: {exc}", path=current_step_path()
            ) from exc
        except Exception as exc:
            # A template is code: {{ 1 / 0 }} raises ZeroDivisionError, {{ question + 1 }}
            # TypeError, both as Python, not Jinja, errors. Each is the prompt's fault for
            # this input, like an undefined variable. (A render over the limits on time or
            # size raises TemplateLimitError, a TemplateError: handled above.)
            raise StepInputError(
                f"prompt cannot be rendered: {type(exc).__name__}: {exc}",
                path=current_step_path(),
            ) from exc
        if self.structured:
            schema = json.dumps(self._schema, separators=(",", ":"))
            user += f"\n\nReply with JSON only, matching this JSON schema: {schema}"
        messages.append(ChatMessage(role="user", content=user))
        return messages

    async def _execute(self, value: Any) -> Any:
        messages = self.render(value)
        span = otel_trace.get_current_span()
        span.set_attribute("gen_ai.prompt", to_attribute([m.model_dump() for m in messages]))
        model = await self._loaded_model()
        results: list[ChatResult] = []
        try:
            if not self.structured:
                results.append(await run_blocking(model.chat, messages, self.params))
                return results[-1].text
            return await self._structured(model, messages, results)
        finally:
            self._record_usage(span, results)

    # --- streaming -----------------------------------------------------------------------

    async def astream(
        self,
        value: Any,
        *,
        on_start: Callable[[str], None] | None = None,
        on_finish: Callable[[ChatResult, str], None] | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply text as the model produces it, traced like a run: one span with
        lifecycle states, the rendered prompt, token usage and time to first token.
        ``on_start(trace_id)`` is called as the span opens (so a generation that is cut short
        can still be found), ``on_finish(result, trace_id)`` with the finished generation.
        Closing the iterator early stops the generation and marks the span cancelled."""
        if self.structured:
            raise StepDefinitionError(
                f"streaming yields text; this step's output type is {type_name(self.output_type)}",
                path=self.name,
            )
        parent_path = current_step_path()
        path = f"{parent_path}/{self.name}" if parent_path else self.name
        # Not a current span (Step._traced): the synchronous stream() runs each step of
        # this generator in its own task, where a context entered in another cannot be left.
        span = get_runtime().tracer.start_span(
            self.name,
            root=not parent_path,
            attributes=self._run_attributes(path, {"slmops.stream": True}),
        )
        if on_start is not None:
            on_start(trace_id_of(span))
        try:
            span.add_event("state", {"state": StepState.INIT.value})
            validated = self._validate_input(value, path)
            span.set_attribute("slmops.input", self._dump(self._input_adapter, validated))
            span.add_event("state", {"state": StepState.INPUT_VALIDATED.value})
            prompt = self._prompt(validated)
            span.set_attribute("gen_ai.prompt", self._prompt_attribute(prompt))
            model = await self._loaded_model()
            span.add_event("state", {"state": StepState.RUNNING.value})
            collected = StreamAccumulator(model=model.uri)  # the version that answers
            async for chunk in iterate_blocking(self._chunks(model, prompt)):
                collected.add(chunk)
                if chunk.text:
                    yield chunk.text
            result = collected.result()
            self._record_usage(span, [result])
            if result.time_to_first_token_s is not None:
                span.set_attribute(
                    "slmops.llm.time_to_first_token_ms", result.time_to_first_token_s * 1000
                )
            output = self._validate_output(result.text, path)
            self._finish(span, output, self._dump(self._output_adapter, output))
            if on_finish is not None:
                on_finish(result, trace_id_of(span))
        except BaseException as exc:
            replacement = self._failed(span, exc, path)
            if replacement is None:
                raise
            raise replacement from exc
        finally:
            span.end()

    # What a stream sends: chat messages here; a raw-text completion overrides these three.

    def _prompt(self, value: Any) -> Any:
        return self.render(value)

    def _prompt_attribute(self, prompt: Any) -> str:
        return to_attribute([m.model_dump() for m in prompt])

    def _chunks(self, model: ChatModel, prompt: Any) -> Iterator[ChatChunk]:
        return model.stream(prompt, self.params)

    def stream(
        self, value: Any, *, on_finish: Callable[[ChatResult, str], None] | None = None
    ) -> Iterator[str]:
        """:meth:`astream` for synchronous code (a terminal chat, a script)."""
        loop = asyncio.new_event_loop()
        pieces = cast(AsyncGenerator[str, None], self.astream(value, on_finish=on_finish))
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(pieces))
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(pieces.aclose())
            loop.close()

    async def _structured(
        self, model: ChatModel, messages: list[ChatMessage], results: list[ChatResult]
    ) -> Any:
        conversation = list(messages)
        problem = ""
        for _ in range(self.parse_retries + 1):
            result = await run_blocking(
                model.chat, conversation, self.params, json_schema=self._schema
            )
            results.append(result)
            text = result.text
            if result.finish_reason == "length":  # cut off: a whole prefix may still hold it
                text = close_truncated_json(text) or text
            try:
                return self._output_adapter.validate_python(extract_json(text), strict=False)
            except (ValueError, ValidationError) as exc:
                problem = self._describe(exc)
            conversation += [
                ChatMessage(role="assistant", content=result.text),
                ChatMessage(
                    role="user",
                    content=f"That reply is invalid: {problem}. "
                    "Reply again with corrected JSON only.",
                ),
            ]
        raise StepOutputError(
            f"model reply did not parse after {self.parse_retries + 1} tries: {problem}",
            path=current_step_path(),
        )

    @staticmethod
    def _describe(exc: Exception) -> str:
        if isinstance(exc, ValidationError):
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            return f"field '{field}': {error['msg']}" if field else error["msg"]
        return str(exc)

    @staticmethod
    def _record_usage(span: Any, results: Sequence[ChatResult]) -> None:
        if not results:
            return
        usage = Usage(
            sum(r.usage.prompt_tokens for r in results),
            sum(r.usage.completion_tokens for r in results),
        )
        span.set_attribute("gen_ai.response.model", results[-1].model)
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [r.finish_reason for r in results])
        span.set_attribute("slmops.llm.calls", len(results))
        span.set_attribute("slmops.llm.latency_ms", sum(r.latency_s for r in results) * 1000)
        span.set_attribute("slmops.llm.response", to_attribute(results[-1].text))
