from __future__ import annotations

import asyncio
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slmops.core import Chain, Function
from slmops.core.runtime import Runtime, use_runtime
from slmops.core.tracing import MAX_ATTRIBUTE_CHARS, Tracer
from slmops.errors import StepExecutionError
from slmops.store.traces import count_traces, get_trace, list_traces


def ok(x: int) -> int:
    return x + 1


def fails(x: int) -> int:
    raise ValueError("bad value")


def test_failed_runs_are_stored_with_their_error(workspace):
    chain = Chain("pipeline", [Function(ok), Function(fails)])
    with pytest.raises(StepExecutionError, match="step 'pipeline/fails': ValueError: bad value"):
        chain.run(1)
    [trace] = list_traces(workspace.engine, status="error")
    assert trace["name"] == "pipeline" and "bad value" in trace["error"]
    _, spans = get_trace(workspace.engine, trace["trace_id"])
    by_name = {s["name"]: s for s in spans}
    assert by_name["ok"]["status"] == "ok"
    assert by_name["fails"]["status"] == "error"
    assert by_name["fails"]["attributes"]["slmops.state"] == "failed"
    exception_events = [e for e in by_name["fails"]["events"] if e["name"] == "exception"]
    assert (
        exception_events and "bad value" in exception_events[0]["attributes"]["exception.message"]
    )
    # the exception is recorded where it arose, not again on every ancestor
    assert not [e for e in by_name["pipeline"]["events"] if e["name"] == "exception"]


def test_every_run_is_its_own_trace_even_when_concurrent(workspace):
    step = Chain("c", [Function(ok)])

    async def many() -> list[str]:
        results = await asyncio.gather(*(step.ainvoke(i) for i in range(8)))
        return [r.trace_id for r in results]

    ids = asyncio.run(many())
    assert len(set(ids)) == 8
    assert count_traces(workspace.engine) == 8
    for trace_id in ids:
        trace, spans = get_trace(workspace.engine, trace_id)
        assert trace["span_count"] == len(spans) == 2


def test_large_inputs_are_cut_on_the_span_not_in_the_run(spans_of):
    def length(text: str) -> int:
        return len(text)

    big = "x" * (MAX_ATTRIBUTE_CHARS + 500)
    result = Function(length).invoke(big)
    assert result.output == len(big)
    stored = spans_of(result.trace_id)["length"]["attributes"]["slmops.input"]
    assert "chars cut" in stored and len(stored) < MAX_ATTRIBUTE_CHARS + 100


def test_trace_lookup_by_prefix(workspace):
    from slmops.errors import NotFoundError

    trace_id = Function(ok).invoke(1).trace_id
    assert get_trace(workspace.engine, trace_id[:8])[0]["trace_id"] == trace_id
    with pytest.raises(NotFoundError, match="too short"):
        get_trace(workspace.engine, "abc")
    with pytest.raises(NotFoundError, match="no trace"):
        get_trace(workspace.engine, "ffffffffffff")


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_spans_are_exported_over_otlp_http():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracer = Tracer(otlp_endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces")
        with use_runtime(Runtime(tracer=tracer)):
            Chain("exported", [Function(ok)]).run(1)
        tracer.shutdown()  # flushes the batch processor
    finally:
        server.shutdown()
    path, content_type, body = _Collector.received[-1]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    names = {s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert names == {"exported", "ok"}
