"""Tracing on the OpenTelemetry SDK, persisted into the workspace store.

Span and attribute names follow the OpenTelemetry GenAI semantic conventions where they
apply (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
...); slmops' own attributes live under ``slmops.*``. Each run's spans are buffered and
written in one transaction when its root span ends, so a stored trace is always whole, and
an optional OTLP exporter sends the same spans to Phoenix, Langfuse or any collector.

With a :class:`~slmops.store.redaction.Redactor` (the workspace's ``redact`` settings), both
paths get redacted copies of the spans, so neither the store nor a collector ever sees the
raw text; without one, spans go out as they are, with no copy made.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode
from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from slmops.store.redaction import Redactor
from slmops.store.schema import spans as spans_table
from slmops.store.traces import save_trace

logger = logging.getLogger(__name__)

MAX_ATTRIBUTE_CHARS = 16_000
"""Inputs and outputs longer than this are cut on the span (the run itself is unaffected)."""


def to_attribute(value: Any) -> str:
    """JSON text for a span attribute, cut to :data:`MAX_ATTRIBUTE_CHARS`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > MAX_ATTRIBUTE_CHARS:
        return text[:MAX_ATTRIBUTE_CHARS] + f"... [{len(text) - MAX_ATTRIBUTE_CHARS} chars cut]"
    return text


NOT_REDACTED = frozenset(
    {"slmops.request_id", "slmops.shadow_of", "slmops.step.kind", "slmops.state"}
)
"""Attributes that hold identifiers other records are joined on (feedback finds its trace by
request id), never prompt or answer text: redaction leaves them alone."""


def _redacted_attributes(
    attributes: Mapping[str, Any] | None, redactor: Redactor
) -> dict[str, Any]:
    redacted: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in NOT_REDACTED:
            redacted[key] = value
        elif isinstance(value, str):
            redacted[key] = redactor.redact_json(value)  # inputs and outputs are JSON text
        elif isinstance(value, (tuple, list)):
            redacted[key] = tuple(redactor.redact(v) if isinstance(v, str) else v for v in value)
        else:
            redacted[key] = value
    return redacted


def redacted_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """A copy of a finished span with every string attribute value, event attribute value and
    the status description (an error message can quote the input) redacted."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redactor.redact(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redacted_attributes(span.attributes, redactor),
        events=[
            Event(event.name, _redacted_attributes(event.attributes, redactor), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Exports redacted copies of spans through another exporter (OTLP, in-memory, ...)."""

    def __init__(self, exporter: SpanExporter, redactor: Redactor) -> None:
        self.exporter = exporter
        self.redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([redacted_span(span, self.redactor) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _span_row(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None  # a finished SDK span always has one
    attributes = dict(span.attributes or {})
    failed = span.status.status_code == StatusCode.ERROR
    return {
        "span_id": f"{ctx.span_id:016x}",
        "trace_id": f"{ctx.trace_id:032x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": str(attributes.get("slmops.step.kind", "internal")),
        "status": "error" if failed else "ok",
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "error": span.status.description if failed else None,
        "attributes": {
            k: v if not isinstance(v, tuple) else list(v) for k, v in attributes.items()
        },
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


class StoreSpanProcessor(SpanProcessor):
    """Buffers the spans of each trace and saves them when the trace's root span ends,
    redacted first when given a (truthy) redactor."""

    def __init__(self, engine: Engine, redactor: Redactor | None = None) -> None:
        self._engine = engine
        self._redactor = redactor if redactor else None
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._redactor is not None:
            span = redacted_span(span, self._redactor)
        row = _span_row(span)
        trace_id = row["trace_id"]
        with self._lock:
            if span.parent is not None:
                buffer = self._buffers.get(trace_id)
                if buffer is not None:
                    buffer.append(row)
                    return
            rows = self._buffers.pop(trace_id, [])
        try:
            if span.parent is None:
                save_trace(self._engine, self._trace_row(row, len(rows) + 1), [*rows, row])
            else:
                # A span that ends after its run did (an abandoned timed-out thread).
                with self._engine.begin() as connection:
                    connection.execute(insert(spans_table), [row])
        except SQLAlchemyError as exc:  # tracing must never fail the run it observes
            logger.warning("slmops: trace %s could not be stored: %s", trace_id, exc)

    def begin_trace(self, trace_id: str) -> None:
        with self._lock:
            self._buffers.setdefault(trace_id, [])

    @staticmethod
    def _trace_row(root: dict[str, Any], span_count: int) -> dict[str, Any]:
        return {
            "trace_id": root["trace_id"],
            "name": root["name"],
            "status": root["status"],
            "started_at": root["start_ns"] / 1e9,
            "duration_ms": (root["end_ns"] - root["start_ns"]) / 1e6,
            "span_count": span_count,
            "error": root["error"],
            "attributes": {
                k: v for k, v in root["attributes"].items() if not k.startswith("slmops.output")
            },
        }

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracer:
    """Creates spans for step runs; stores them when given an engine, exports them over
    OTLP/HTTP when given an endpoint (needs the ``otlp`` extra). A truthy ``redactor``
    redacts what is stored and what is exported alike."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        otlp_endpoint: str | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor if redactor else None
        """The redactor applied to stored and exported spans; None when nothing is redacted."""
        self._provider = TracerProvider(resource=Resource.create({"service.name": "slmops"}))
        self._store = StoreSpanProcessor(engine, self.redactor) if engine is not None else None
        if self._store is not None:
            self._provider.add_span_processor(self._store)
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter: SpanExporter = OTLPSpanExporter(endpoint=otlp_endpoint)
            if self.redactor is not None:
                exporter = RedactingSpanExporter(exporter, self.redactor)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("slmops")

    @contextmanager
    def span(self, name: str, *, root: bool, attributes: dict[str, Any]) -> Iterator[Span]:
        """A current span for one step run; ``root`` starts a new trace whatever is active."""
        parent = otel_context.Context() if root else None
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if root and self._store is not None:
                self._store.begin_trace(f"{span.get_span_context().trace_id:032x}")
            yield span

    def start_span(self, name: str, *, root: bool, attributes: dict[str, Any]) -> Span:
        """A span that is *not* made current: for work that spans several ``yield``s (a
        stream), where entering and leaving a context on different tasks would fail. The
        caller must ``end()`` it."""
        span = self._tracer.start_span(
            name, context=otel_context.Context() if root else None, attributes=attributes
        )
        if root and self._store is not None:
            self._store.begin_trace(f"{span.get_span_context().trace_id:032x}")
        return span

    def shutdown(self) -> None:
        self._provider.shutdown()


def current_span() -> Span:
    """The span of the step now running (a no-op span outside any run)."""
    return otel_trace.get_current_span()


def trace_id_of(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"
