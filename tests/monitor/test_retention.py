"""Retention: old traces are deleted hour by hour, their hours rolled up so the monitored
figures stay as they were; crashes leave every hour whole; feedback is kept."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from slmops.errors import ConfigError
from slmops.monitor import figures
from slmops.monitor.figures import Tally, window_figures
from slmops.monitor.retention import PruneResult, StackPruned, prune_traces, retention_cutoff
from slmops.store.schema import feedback, monitor_rollups, monitor_scores, spans, traces

HOUR = 3600.0
DAY = 86400.0
H0 = 1_699_999_200.0  # a whole hour (UTC)
NOW = H0 + 5 * DAY + 1800  # older_than_days=2 -> cutoff H0 + 3 days
CUTOFF = H0 + 3 * DAY
STEPS = {"chat": 1700.0, "qa": 1000.0}  # seconds between a stack's traces
OFFSETS = {"chat": 250.0, "qa": 0.0}


def _id(*parts: object, length: int = 32) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()[:length]


def add_trace(engine: Engine, stack: str, i: int, started_at: float) -> None:
    """One synthetic trace with model-call, cite and retrieval spans, online scores and
    (for some) feedback; every figure depends on ``i``."""
    trace_id = _id(stack, i)
    duration = 50.0 + ((i * 37) % 400) * 5 + (7 if stack == "chat" else 0)
    rows: list[dict[str, Any]] = []

    def span(kind: str, n: int, attributes: dict[str, Any]) -> None:
        rows.append(
            {
                "span_id": _id(stack, i, kind, n, length=16),
                "trace_id": trace_id,
                "parent_id": None,
                "name": f"{kind}-{n}",
                "kind": kind,
                "status": "ok",
                "start_ns": int(started_at * 1e9),
                "end_ns": int((started_at + duration / 1000) * 1e9),
                "error": None,
                "attributes": attributes,
                "events": [],
            }
        )

    span("retriever", 0, {"slmops.retrieve.k": 4})
    for n in range(2 if i % 5 == 0 else 1):
        span(
            "llm",
            n,
            {"gen_ai.usage.input_tokens": 100 + i % 50, "gen_ai.usage.output_tokens": 20 + i % 13},
        )
    if i % 3 != 0:
        cite: dict[str, Any] = {"slmops.cite.refused": i % 4 == 1}
        if i % 11 != 0:
            cite["slmops.cite.relevance"] = ((i * 13) % 100) / 100
        span("cite", 0, cite)
    scores = []
    if i % 2 == 0:
        scores.append(("faithfulness", None if i % 10 == 4 else ((i * 7) % 10) / 10))
    if i % 3 == 0:
        scores.append(("answer_relevance", ((i * 3) % 7) / 7))
    notes = []
    if i % 6 == 0:
        notes.append((1.0 if i % 12 == 0 else 0.0, 1 if i % 12 == 0 else 0))
    if i % 17 == 0:
        notes.append((None, None))  # a comment only
    error = i % 7 == 3
    with engine.begin() as connection:
        connection.execute(
            insert(traces).values(
                trace_id=trace_id,
                name=stack,
                status="error" if error else "ok",
                started_at=started_at,
                duration_ms=duration,
                span_count=len(rows),
                error="boom" if error else None,
                attributes={"slmops.request_id": f"req-{trace_id[:12]}"},  # served traffic
            )
        )
        connection.execute(insert(spans), rows)
        for metric, value in scores:
            connection.execute(
                insert(monitor_scores).values(
                    trace_id=trace_id,
                    metric=metric,
                    stack=stack,
                    value=value,
                    trace_started_at=started_at,
                    scored_at=started_at + 60,
                )
            )
        for score, raw in notes:
            connection.execute(
                insert(feedback).values(
                    trace_id=trace_id,
                    stack=stack,
                    source="user",
                    scale="thumbs",
                    raw_score=raw,
                    score=score,
                    comment="noted",
                    labels=[],
                    created_at=started_at + 600,  # sometimes in the next hour
                )
            )


@pytest.fixture
def engine(workspace: Any) -> Engine:
    """Five days of traffic for two stacks, and two traces either side of the cutoff."""
    engine = workspace.engine
    for stack, step in STEPS.items():
        i = 0
        while (at := H0 + OFFSETS[stack] + i * step) < H0 + 5 * DAY:
            add_trace(engine, stack, i, at)
            i += 1
    add_trace(engine, "qa", 10_000, CUTOFF - 0.5)  # the last moment that is pruned
    add_trace(engine, "qa", 10_001, CUTOFF)  # the first moment that is kept
    return engine


WINDOWS = [(H0, H0 + 6 * DAY)] + [(H0 + d * DAY, H0 + (d + 1) * DAY) for d in range(5)]
WINDOWS += [(CUTOFF - 5 * HOUR, CUTOFF + 5 * HOUR), (CUTOFF - HOUR, CUTOFF)]


def all_figures(engine: Engine) -> dict[tuple[str, float, float], dict[str, float | None]]:
    return {
        (stack, start, end): window_figures(engine, stack, start, end)
        for stack in STEPS
        for start, end in WINDOWS
    }


def assert_same_figures(before: dict[Any, Any], after: dict[Any, Any]) -> None:
    assert before.keys() == after.keys()
    for window, was in before.items():
        now = after[window]
        assert now.keys() == was.keys(), window
        assert was["requests"] > 0, window  # the windows are not empty
        for name, value in was.items():
            where = f"{name} of {window}"
            if value is None:
                assert now[name] is None, where
            elif name.endswith("latency_ms"):
                if was["requests"] >= 50:  # percentiles of a few traces are too coarse
                    assert now[name] == pytest.approx(value, rel=0.06), where
            else:
                assert now[name] == pytest.approx(value, rel=1e-9), where


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(table)
        return int(connection.execute(query.where(*where) if where else query).scalar_one())


def rollups(engine: Engine) -> dict[tuple[str, float], dict[str, Any]]:
    with engine.connect() as connection:
        return {
            (row.stack, row.hour): row.figures
            for row in connection.execute(select(monitor_rollups))
        }


def snapshot(engine: Engine) -> tuple[Any, ...]:
    counts = tuple(count(engine, t) for t in (traces, spans, monitor_scores, feedback))
    return counts, rollups(engine)


def old_hours(engine: Engine, stack: str | None = None) -> set[tuple[str, float]]:
    with engine.connect() as connection:
        query = select(traces.c.name, traces.c.started_at).where(traces.c.started_at < CUTOFF)
        return {
            (name, math.floor(at / HOUR) * HOUR)
            for name, at in connection.execute(query)
            if stack in (None, name)
        }


def expected_result(engine: Engine) -> PruneResult:
    """What a prune at NOW should delete, counted straight from the tables."""
    expected = PruneResult(cutoff=CUTOFF)
    for stack in STEPS:
        old = traces.c.started_at < CUTOFF
        ids = select(traces.c.trace_id).where(traces.c.name == stack, old)
        pruned = StackPruned(
            traces=count(engine, traces, traces.c.name == stack, old),
            spans=count(engine, spans, spans.c.trace_id.in_(ids)),
            scores=count(
                engine,
                monitor_scores,
                monitor_scores.c.stack == stack,
                monitor_scores.c.trace_started_at < CUTOFF,
            ),
            hours=len(old_hours(engine, stack)),
        )
        expected.stacks[stack] = pruned
        expected.traces += pruned.traces
        expected.spans += pruned.spans
        expected.scores += pruned.scores
        expected.hours += pruned.hours
    return expected


# --- pruning ------------------------------------------------------------------------------


def test_prune_deletes_old_traces_and_keeps_the_figures(engine):
    before = all_figures(engine)
    expected = expected_result(engine)
    hours = old_hours(engine)
    feedback_rows = count(engine, feedback)
    recent = count(engine, traces, traces.c.started_at >= CUTOFF)
    recent_spans = count(engine, spans)
    recent_spans -= expected.spans
    assert expected.traces > 200 and expected.hours > 100  # the data reach far back

    result = prune_traces(engine, older_than_days=2, now=NOW)

    assert result == expected
    assert result.cutoff == CUTOFF
    assert count(engine, traces, traces.c.started_at < CUTOFF) == 0
    assert count(engine, monitor_scores, monitor_scores.c.trace_started_at < CUTOFF) == 0
    assert count(engine, traces) == recent
    assert count(engine, spans) == recent_spans
    assert count(engine, monitor_scores) > 0
    assert count(engine, traces, traces.c.trace_id == _id("qa", 10_000)) == 0
    assert count(engine, traces, traces.c.trace_id == _id("qa", 10_001)) == 1
    assert count(engine, feedback) == feedback_rows  # feedback is kept
    assert count(engine, feedback, feedback.c.created_at < CUTOFF) > 0

    stored = rollups(engine)
    assert set(stored) == hours
    assert all(f["feedback_scored"] == f["feedback_positive"] == 0 for f in stored.values())
    assert sum(f["requests"] for f in stored.values()) == expected.traces
    assert "latencies" not in next(iter(stored.values()))

    after = all_figures(engine)
    assert_same_figures(before, after)
    # windows wholly after the cutoff are still exact, latency percentiles included
    assert after[("qa", H0 + 4 * DAY, H0 + 5 * DAY)] == before[("qa", H0 + 4 * DAY, H0 + 5 * DAY)]
    # a rolled-up window's percentiles come from the histogram now
    whole = ("qa", H0, H0 + 6 * DAY)
    assert after[whole]["p50_latency_ms"] != before[whole]["p50_latency_ms"]


def test_pruning_twice_deletes_nothing_the_second_time(engine):
    before = all_figures(engine)
    first = prune_traces(engine, older_than_days=2, now=NOW)
    state = snapshot(engine)
    once = all_figures(engine)

    again = prune_traces(engine, older_than_days=2, now=NOW + 20 * 60)  # same cutoff hour

    assert first.traces > 0
    assert again == PruneResult(cutoff=CUTOFF)
    assert snapshot(engine) == state
    assert all_figures(engine) == once
    assert_same_figures(before, once)


def test_dry_run_counts_and_changes_nothing(engine):
    state = snapshot(engine)
    before = all_figures(engine)
    calls: list[tuple[int, int]] = []

    dry = prune_traces(
        engine, older_than_days=2, now=NOW, dry_run=True, progress=lambda *a: calls.append(a)
    )

    assert snapshot(engine) == state
    assert all_figures(engine) == before
    assert dry.dry_run
    assert calls == [(n, dry.hours) for n in range(1, dry.hours + 1)]
    real = prune_traces(engine, older_than_days=2, now=NOW)
    assert not real.dry_run
    assert (dry.traces, dry.spans, dry.scores, dry.hours, dry.stacks) == (
        real.traces,
        real.spans,
        real.scores,
        real.hours,
        real.stacks,
    )
    assert dry.traces > 0


def test_one_stack_only_and_progress_per_hour(engine):
    chat_old = count(engine, traces, traces.c.name == "chat", traces.c.started_at < CUTOFF)
    qa_hours = old_hours(engine, "qa")
    calls: list[tuple[int, int]] = []

    result = prune_traces(
        engine, older_than_days=2, now=NOW, stack="qa", progress=lambda *a: calls.append(a)
    )

    assert set(result.stacks) == {"qa"}
    assert result.hours == len(qa_hours) > 0
    assert calls == [(n, result.hours) for n in range(1, result.hours + 1)]
    assert count(engine, traces, traces.c.name == "qa", traces.c.started_at < CUTOFF) == 0
    assert count(engine, traces, traces.c.name == "chat", traces.c.started_at < CUTOFF) == chat_old
    assert {stack for stack, _ in rollups(engine)} == {"qa"}


def test_a_crash_mid_prune_leaves_each_hour_whole(engine, monkeypatch):
    before = all_figures(engine)
    hours = sorted(old_hours(engine))
    to_rollup = Tally.to_rollup
    calls = []

    def crash_on_the_second(self: Tally) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 2:  # after the second hour's deletes, before its rollup
            raise RuntimeError("power cut")
        return to_rollup(self)

    monkeypatch.setattr(figures.Tally, "to_rollup", crash_on_the_second)
    with pytest.raises(RuntimeError, match="power cut"):
        prune_traces(engine, older_than_days=2, now=NOW)
    monkeypatch.undo()

    (first_stack, first_hour), (second_stack, second_hour) = hours[0], hours[1]
    assert list(rollups(engine)) == [(first_stack, first_hour)]
    assert old_hours(engine) == set(hours[1:])  # the second hour's deletes were undone

    def in_hour(stack: str, hour: float) -> list[Any]:
        return [
            traces.c.name == stack,
            traces.c.started_at >= hour,
            traces.c.started_at < hour + HOUR,
        ]

    assert count(engine, traces, *in_hour(first_stack, first_hour)) == 0
    assert count(engine, traces, *in_hour(second_stack, second_hour)) > 0
    ids = select(traces.c.trace_id).where(*in_hour(second_stack, second_hour))
    assert count(engine, spans, spans.c.trace_id.in_(ids)) > 0
    assert_same_figures(before, all_figures(engine))

    rest = prune_traces(engine, older_than_days=2, now=NOW)  # a rerun finishes the job
    assert rest.hours == len(hours) - 1
    assert set(rollups(engine)) == set(hours)
    assert_same_figures(before, all_figures(engine))


def test_a_late_trace_in_a_rolled_up_hour_is_merged_into_its_rollup(engine):
    day = ("qa", H0, H0 + DAY)
    requests = all_figures(engine)[day]["requests"]
    prune_traces(engine, older_than_days=2, now=NOW)
    hour = H0 + 10 * HOUR
    stored = rollups(engine)[("qa", hour)]
    add_trace(engine, "qa", 20_000, hour + 1234)  # exported late
    with_late = all_figures(engine)
    assert with_late[day]["requests"] == requests + 1  # rollups and the live trace

    result = prune_traces(engine, older_than_days=2, now=NOW)

    assert (result.traces, result.hours) == (1, 1)
    merged = rollups(engine)[("qa", hour)]
    assert merged["requests"] == stored["requests"] + 1
    assert merged["prompt_tokens"] > stored["prompt_tokens"]
    assert_same_figures(with_late, all_figures(engine))


# --- the cutoff and its guard -------------------------------------------------------------


def test_the_cutoff_is_rounded_down_to_a_whole_hour():
    assert retention_cutoff(2, now=NOW) == CUTOFF
    assert retention_cutoff(2, now=CUTOFF + 2 * DAY) == CUTOFF
    assert retention_cutoff(2, now=CUTOFF + 2 * DAY - 1) == CUTOFF - HOUR
    assert retention_cutoff(0.5, now=H0 + DAY + 59 * 60) == H0 + 12 * HOUR


@pytest.mark.parametrize("days", [0, -1, -0.5, math.nan, math.inf, True, "7"])
def test_older_than_days_must_be_positive(engine, days):
    state = snapshot(engine)
    with pytest.raises(ConfigError, match="greater than 0"):
        prune_traces(engine, older_than_days=days, now=NOW)
    assert snapshot(engine) == state
