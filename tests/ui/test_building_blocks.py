"""The pieces under the pages: the trace query's plan and pages, the waterfall's layout,
the charts' geometry, and the `slmops ui` command's refusal to expose itself keyless."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from sqlalchemy import text
from typer.testing import CliRunner

from slmops.cli.main import app
from slmops.store import Workspace
from slmops.store.traces import get_trace
from slmops.ui.charts import line_chart
from slmops.ui.server import free_port
from slmops.ui.trace_search import TraceFilter, page_query, search_traces
from slmops.ui.waterfall import waterfall
from tests.monitor.traces import make_trace


def test_the_trace_query_walks_the_started_at_index(workspace: Workspace):
    for number in range(200):
        make_trace(workspace.engine, started_at=1000.0 + number, status="ok")
    with workspace.engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        for chosen, cursor in (
            (TraceFilter(), ""),
            (TraceFilter(status="error", stack="handbook-rag"), "1100.0_ab"),
            (TraceFilter(last="24h", min_ms="500"), "1100.0_ab"),
        ):
            query = page_query(chosen, now=2000.0, cursor=cursor)
            compiled = query.compile(workspace.engine, compile_kwargs={"literal_binds": True})
            plan = " | ".join(
                str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            )
            assert "USING INDEX ix_traces_started_at" in plan, plan


def test_pages_cover_every_trace_once_even_with_equal_start_times(workspace: Workspace):
    made = {make_trace(workspace.engine, started_at=1000.0 + i // 3) for i in range(14)}
    seen: list[str] = []
    cursor = ""
    while True:
        page = search_traces(workspace.engine, TraceFilter(), now=2000.0, cursor=cursor, limit=4)
        seen += [row["trace_id"] for row in page.rows]
        if page.older is None:
            break
        cursor = page.older
    assert len(seen) == 14 and set(seen) == made
    starts = [
        r["started_at"]
        for r in search_traces(workspace.engine, TraceFilter(), now=2000.0, limit=20).rows
    ]
    assert starts == sorted(starts, reverse=True)


def test_the_waterfall_places_children_under_parents_by_time(workspace: Workspace):
    trace_id = make_trace(workspace.engine, duration_ms=400.0)
    _, spans = get_trace(workspace.engine, trace_id)
    shifted = [dict(s) for s in spans]
    root = next(s for s in shifted if s["parent_id"] is None)
    for span in shifted:  # retrieval in the first quarter, the model call after it
        if span["kind"] == "retrieval":
            span["end_ns"] = span["start_ns"] + 100_000_000
        if span["kind"] == "llm":
            span["start_ns"] = root["start_ns"] + 100_000_000
    rows = waterfall(shifted)
    assert [row.depth for row in rows] == [0, 1, 1, 1]
    assert rows[0].span["kind"] == "stack" and rows[0].width_pct == 100
    by_kind = {row.span["kind"]: row for row in rows}
    assert by_kind["retrieval"].offset_pct == 0 and by_kind["retrieval"].width_pct == 25
    assert by_kind["llm"].offset_pct == 25 and by_kind["llm"].width_pct == 75
    assert by_kind["llm"].tokens == (100, 20)
    assert [label for label, _ in rows[0].io] == ["input", "output"]


def test_a_chart_breaks_its_line_where_a_window_has_no_data():
    chart = line_chart("Latency", ["a", "b", "c", "d"], {"p50": [1.0, None, 3.0, 4.0]}, fmt=str)
    [series] = chart.series
    assert [len(segment) for segment in series.segments] == [1, 2]
    assert series.segments[1][1].y < series.segments[1][0].y  # higher values higher up
    assert [tick.label for tick in chart.y_ticks] == ["0.0", "2.0", "4.0"]
    assert not chart.empty and line_chart("x", ["a"], {"y": [None]}, fmt=str).empty


def test_slmops_ui_refuses_a_public_address_without_a_key(workspace: Workspace):
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "refusing to serve on 0.0.0.0 without an API key" in str(result.exception)


def test_slmops_ui_serves_the_console(workspace: Workspace, tmp_path):
    """The command itself: started as a user would, answering on its port, then stopped."""
    make_trace(workspace.engine)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slmops.cli.main",
            "ui",
            "--port",
            str(port),
            "-w",
            str(workspace.home),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/traces", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "slmops ui did not start in 60 s"
                time.sleep(0.2)
        assert page.status_code == 200 and "handbook-rag" in page.text
    finally:
        process.terminate()
        process.wait(timeout=30)
