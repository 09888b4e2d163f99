"""The base of every step: validation, lifecycle states, retries, timeouts, fallback,
caching and tracing, shared by Function, Chain, Concurrent, Decision and LLMCall.

Steps are immutable once built; everything about one run lives in context variables and on
the run's spans, so one step instance can run many times at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from opentelemetry.trace import Span, StatusCode
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from slmops.core.cache import cache_key
from slmops.core.options import Retry
from slmops.core.runtime import Runtime, get_runtime
from slmops.core.tracing import to_attribute, trace_id_of
from slmops.core.typing_rules import Converter, adapter, connection, type_name
from slmops.errors import (
    SlmopsError,
    StepDefinitionError,
    StepError,
    StepExecutionError,
    StepInputError,
    StepOutputError,
    StepTimeoutError,
)

if TYPE_CHECKING:
    from slmops.core.graph import Graph, GraphBuilder

I = TypeVar("I")  # noqa: E741 - the conventional name for a step's input type
O = TypeVar("O")  # noqa: E741

Validator = Callable[[Any], object]
"""Called with a validated value; rejects it by raising ValueError/AssertionError or
returning ``False``."""

_NAME = re.compile(r"^[A-Za-z0-9_.:+>\- ]{1,100}$")
_current_path: ContextVar[str] = ContextVar("slmops_step_path", default="")


class StepState(enum.StrEnum):
    """Lifecycle of one step run; each transition is an event on the run's span."""

    INIT = "init"
    INPUT_VALIDATED = "input_validated"
    RUNNING = "running"
    OUTPUT_VALIDATED = "output_validated"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class RunResult(Generic[O]):
    output: O
    trace_id: str
    duration_ms: float


def current_step_path() -> str:
    """The path of the step running in this context, e.g. ``qa/answer`` ('' outside runs)."""
    return _current_path.get()


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or None
    return field, error["msg"]


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, types):
            return True
        seen = seen.__cause__
    return False


class Step(Generic[I, O]):
    """A named, typed unit of work. Subclasses implement :meth:`_execute`."""

    kind: ClassVar[str] = "step"
    shape: ClassVar[str] = "box"  # how graphs draw it

    def __init__(
        self,
        name: str,
        *,
        input_type: Any,
        output_type: Any,
        version: str = "1",
        description: str = "",
        retry: Retry | int | None = None,
        timeout_s: float | None = None,
        fallback: Step[Any, Any] | None = None,
        cache: bool = False,
        input_validators: Sequence[Validator] = (),
        output_validators: Sequence[Validator] = (),
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise StepDefinitionError(
                f"step name {name!r} must be 1-100 letters, digits, spaces or '_.:+>-' (no '/')"
            )
        self.name = name
        self.input_type = input_type
        self.output_type = output_type
        self.description = description
        self._input_adapter = adapter(input_type)
        self._output_adapter = adapter(output_type)
        self.input_validators = tuple(input_validators)
        self.output_validators = tuple(output_validators)
        self._set_options(
            version=version, retry=retry, timeout_s=timeout_s, fallback=fallback, cache=cache
        )
        self._frozen = True

    # --- immutability and options --------------------------------------------------------

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"step '{self.name}' is immutable; use .with_options(...) for a changed copy"
            )
        object.__setattr__(self, key, value)

    def _set_options(
        self,
        *,
        version: str,
        retry: Retry | int | None,
        timeout_s: float | None,
        fallback: Step[Any, Any] | None,
        cache: bool,
    ) -> None:
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = Retry(attempts=retry)
        if retry is not None and not isinstance(retry, Retry):
            raise StepDefinitionError(
                "retry must be a Retry or a number of attempts", path=self.name
            )
        if timeout_s is not None and not timeout_s > 0:
            raise StepDefinitionError("timeout_s must be a positive number", path=self.name)
        converter: Converter | None = None
        if fallback is not None:
            if not isinstance(fallback, Step):
                raise StepDefinitionError("fallback must be a step", path=self.name)
            problem, _ = connection(self.input_type, fallback.input_type)
            if problem is None:
                problem, converter = connection(fallback.output_type, self.output_type)
            if problem:
                raise StepDefinitionError(
                    f"fallback '{fallback.name}' does not fit: {problem}", path=self.name
                )
        self.version = str(version)
        self.retry = retry
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.cache = bool(cache)
        self._fallback_converter = converter

    def with_options(self, **changes: Any) -> Self:
        """A copy with other ``version``/``retry``/``timeout_s``/``fallback``/``cache``;
        the original is unchanged."""
        allowed = {"version", "retry", "timeout_s", "fallback", "cache"}
        unknown = set(changes) - allowed
        if unknown:
            raise StepDefinitionError(
                f"unknown option(s) {sorted(unknown)}; options: {sorted(allowed)}", path=self.name
            )
        options = {key: getattr(self, key) for key in allowed} | changes
        clone = copy.copy(self)
        object.__setattr__(clone, "_frozen", False)
        clone._set_options(**options)
        clone._frozen = True
        return clone

    # --- what subclasses provide ---------------------------------------------------------

    async def _execute(self, value: I) -> O:
        raise NotImplementedError

    def children(self) -> Sequence[Step[Any, Any]]:
        """Steps this one is composed of (for graphs and listings)."""
        return ()

    def cache_identity(self) -> dict[str, Any]:
        """What makes two runs of this step on the same input interchangeable."""
        return {"kind": self.kind, "name": self.name, "version": self.version}

    def span_attributes(self) -> dict[str, Any]:
        return {}

    # --- running -------------------------------------------------------------------------

    def run(self, value: Any) -> O:
        """Run synchronously (from code that is not already inside an event loop)."""
        return self.invoke(value).output

    async def arun(self, value: Any) -> O:
        return (await self.ainvoke(value)).output

    def invoke(self, value: Any) -> RunResult[O]:
        """Run synchronously and also return the trace id and duration."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ainvoke(value))
        raise StepError(
            "run()/invoke() cannot be used inside an event loop; await arun()", path=self.name
        )

    async def ainvoke(self, value: Any) -> RunResult[O]:
        started = time.perf_counter()
        captured: dict[str, str] = {}
        output = await self._invoke(value, captured)
        return RunResult(output, captured["trace_id"], (time.perf_counter() - started) * 1000)

    async def _invoke(self, value: Any, captured: dict[str, str] | None = None) -> O:
        with self._traced(captured) as (path, span, runtime):
            return await self._run_traced(value, path, span, runtime)

    @contextlib.contextmanager
    def _traced(
        self, captured: dict[str, str] | None = None, attributes: dict[str, Any] | None = None
    ) -> Iterator[tuple[str, Span, Runtime]]:
        """The scope of one run of this step: its path, its current span (a new trace at the
        top level) and the runtime. Failures are recorded on the span; errors that are not
        slmops errors are wrapped, naming the step path."""
        parent_path = _current_path.get()
        path = f"{parent_path}/{self.name}" if parent_path else self.name
        runtime = get_runtime()
        token = _current_path.set(path)
        try:
            with runtime.tracer.span(
                self.name, root=not parent_path, attributes=self._run_attributes(path, attributes)
            ) as span:
                if captured is not None:
                    captured["trace_id"] = trace_id_of(span)
                try:
                    yield path, span, runtime
                except BaseException as exc:
                    replacement = self._failed(span, exc, path)
                    if replacement is None:
                        raise
                    raise replacement from exc
        finally:
            _current_path.reset(token)

    def _run_attributes(self, path: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The attributes every span of a run of this step starts with."""
        return {
            "slmops.step.kind": self.kind,
            "slmops.step.path": path,
            "slmops.step.version": self.version,
            **self.span_attributes(),
            **(extra or {}),
        }

    @staticmethod
    def _failed(span: Span, exc: BaseException, path: str) -> Exception | None:
        """Record on the span how a run ended early: cancelled (a stream closed, a task
        cancelled) or failed. Returns the error to raise instead of ``exc`` (an unexpected
        exception, wrapped with the step path), or None to re-raise ``exc`` itself."""
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            span.add_event("state", {"state": "cancelled"})
            span.set_attribute("slmops.state", "cancelled")
            span.set_status(StatusCode.ERROR, "stream closed by the consumer")
            return None
        span.add_event("state", {"state": StepState.FAILED.value})
        span.set_attribute("slmops.state", StepState.FAILED.value)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        if not getattr(exc, "_slmops_recorded", False):  # record where it arose, not per level
            span.record_exception(exc)
            with contextlib.suppress(AttributeError):  # some exceptions refuse new attributes
                exc._slmops_recorded = True  # type: ignore[attr-defined]
        if isinstance(exc, Exception) and not isinstance(exc, SlmopsError):
            wrapped = StepExecutionError(f"{type(exc).__name__}: {exc}", path=path)
            wrapped._slmops_recorded = True  # type: ignore[attr-defined]
            return wrapped
        return None

    async def _run_traced(self, value: Any, path: str, span: Span, runtime: Runtime) -> O:
        span.add_event("state", {"state": StepState.INIT.value})
        validated = self._validate_input(value, path)
        span.set_attribute("slmops.input", self._dump(self._input_adapter, validated))
        span.add_event("state", {"state": StepState.INPUT_VALIDATED.value})

        key: str | None = None
        if self.cache and runtime.cache is not None:
            input_json = self._input_adapter.dump_python(validated, mode="json")
            key = cache_key(self.cache_identity(), input_json)
            cached = self._read_cache(runtime, key)
            span.set_attribute("slmops.cache.hit", cached is not None)
            if cached is not None:
                return self._finish(span, cached[0], cached[1])

        span.add_event("state", {"state": StepState.RUNNING.value})
        try:
            output = await self._run_with_retries(validated, path, span)
        except Exception as exc:
            if self.fallback is None:
                raise
            span.add_event("fallback", {"error": f"{type(exc).__name__}: {exc}"})
            span.set_attribute("slmops.fallback.used", self.fallback.name)
            output = await self.fallback._invoke(validated)
            if self._fallback_converter is not None:
                output = self._fallback_converter(output)
            output = self._validate_output(output, path)

        dumped = self._dump(self._output_adapter, output)
        if key is not None and runtime.cache is not None:
            runtime.cache.put(key, self.name, self._output_adapter.dump_json(output).decode())
        return self._finish(span, output, dumped)

    def _finish(self, span: Span, output: O, dumped: str) -> O:
        span.add_event("state", {"state": StepState.OUTPUT_VALIDATED.value})
        span.set_attribute("slmops.output", dumped)
        span.add_event("state", {"state": StepState.COMPLETE.value})
        span.set_attribute("slmops.state", StepState.COMPLETE.value)
        return output

    def _read_cache(self, runtime: Runtime, key: str) -> tuple[O, str] | None:
        assert runtime.cache is not None
        raw = runtime.cache.get(key)
        if raw is None:
            return None
        try:  # re-validate: the output type may have changed since the value was stored
            value = self._output_adapter.validate_json(raw)
            value = self._output_adapter.validate_python(value, strict=True)
        except ValidationError:
            return None
        return value, to_attribute(raw)

    async def _run_with_retries(self, value: I, path: str, span: Span) -> O:
        if self.retry is None or self.retry.attempts == 1:
            return await self._attempt(value, path)
        retry = self.retry

        def retryable(exc: BaseException) -> bool:
            return _caused_by(exc, retry.on) and not isinstance(exc, StepInputError)

        def before_sleep(state: Any) -> None:
            error = state.outcome.exception()
            span.add_event(
                "retry",
                {"attempt": state.attempt_number, "error": f"{type(error).__name__}: {error}"},
            )

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(retry.attempts),
            wait=wait_exponential(multiplier=retry.backoff_s, max=retry.max_backoff_s),
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                span.set_attribute("slmops.attempts", attempt.retry_state.attempt_number)
                return await self._attempt(value, path)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _attempt(self, value: I, path: str) -> O:
        if self.timeout_s is None:
            raw = await self._execute(value)
        else:
            try:
                raw = await asyncio.wait_for(self._execute(value), self.timeout_s)
            except TimeoutError:
                raise StepTimeoutError(
                    f"did not finish within {self.timeout_s:g} s", path=path
                ) from None
        return self._validate_output(raw, path)

    # --- validation ----------------------------------------------------------------------

    def _validate_input(self, value: Any, path: str) -> I:
        try:
            validated = self._input_adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            field, message = _first_error(exc)
            where = f"input field '{field}'" if field else f"input ({type_name(self.input_type)})"
            raise StepInputError(f"{where}: {message}", path=path, field=field) from None
        self._apply_validators(self.input_validators, validated, path, StepInputError, "input")
        return validated

    def _validate_output(self, value: Any, path: str) -> O:
        try:
            validated = self._output_adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            field, message = _first_error(exc)
            where = (
                f"output field '{field}'" if field else f"output ({type_name(self.output_type)})"
            )
            raise StepOutputError(f"{where}: {message}", path=path, field=field) from None
        self._apply_validators(self.output_validators, validated, path, StepOutputError, "output")
        return validated

    @staticmethod
    def _apply_validators(
        validators: Sequence[Validator],
        value: Any,
        path: str,
        error: type[StepInputError] | type[StepOutputError],
        side: str,
    ) -> None:
        for validator in validators:
            label = getattr(validator, "__name__", type(validator).__name__)
            try:
                verdict = validator(value)
            except (ValueError, AssertionError, TypeError) as exc:
                raise error(f"{side} rejected by {label}: {exc}", path=path) from None
            if verdict is False:
                raise error(f"{side} rejected by {label}", path=path)

    @staticmethod
    def _dump(type_adapter: Any, value: Any) -> str:
        try:
            return to_attribute(type_adapter.dump_json(value).decode())
        except (ValueError, TypeError):
            return to_attribute(repr(value))

    # --- structure -----------------------------------------------------------------------

    def graph(self) -> Graph:
        """The step's structure as a graph: ``str()`` is Mermaid, ``.dot()`` Graphviz DOT,
        ``.render(path)`` an SVG or PNG file."""
        from slmops.core.graph import build_graph

        return build_graph(self)

    def graph_label(self) -> str:
        notes = []
        if self.retry:
            notes.append(f"retry x{self.retry.attempts}")
        if self.timeout_s:
            notes.append(f"timeout {self.timeout_s:g}s")
        if self.cache:
            notes.append("cached")
        label = f"{self.name}\n{type_name(self.input_type)} → {type_name(self.output_type)}"
        return label + (f"\n[{', '.join(notes)}]" if notes else "")

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        """Add this step to ``builder``; returns its entry and exit node ids."""
        node = builder.node(self.graph_label(), self.shape)
        return [node], [node]

    def __rshift__(self, other: Step[Any, Any]) -> Step[Any, Any]:
        from slmops.core.chain import Chain

        return Chain(f"{self.name} >> {other.name}", [self, other])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}: "
            f"{type_name(self.input_type)} -> {type_name(self.output_type)})"
        )
