"""A workspace the console tests look at: two stacks' traces over the last day, failures,
refusals, feedback, a firing alert rule, and one trace whose question and answer are markup."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, update

from slmops.monitor.alerts import add_rule, evaluate_rules
from slmops.monitor.feedback import record_feedback
from slmops.monitor.figures import BASE_FIGURES
from slmops.store.schema import spans
from tests.monitor.traces import make_trace

STACK = "handbook-rag"
OTHER = "support-chat"
SCRIPT_QUESTION = "<script>alert(1)</script>"
SCRIPT_ANSWER = "<img src=x onerror=alert(2)><script>alert(3)</script> done"


@dataclass
class ConsoleData:
    now: float
    stack_ids: list[str] = field(default_factory=list)  # STACK's traces, newest first
    errors: list[str] = field(default_factory=list)
    other_ids: list[str] = field(default_factory=list)
    script_id: str = ""
    positive_id: str = ""
    negative_id: str = ""
    slow_id: str = ""


def set_model(engine: Engine, trace_id: str, model: str) -> None:
    """Make a stored trace's model call answered by ``model``."""
    with engine.begin() as connection:
        row = connection.execute(
            select(spans.c.span_id, spans.c.attributes).where(
                spans.c.trace_id == trace_id, spans.c.kind == "llm"
            )
        ).one()
        connection.execute(
            update(spans)
            .where(spans.c.span_id == row.span_id)
            .values(attributes={**row.attributes, "gen_ai.response.model": model})
        )


_PHASES = {"retrieval": (0.01, 0.08), "llm": (0.1, 0.93), "cite": (0.94, 0.995)}


def stagger_spans(engine: Engine, trace_id: str) -> None:
    """Give a made trace's child spans the order a rag stack runs them in (retrieve, then
    the model call, then cite) instead of all spanning the whole trace."""
    with engine.begin() as connection:
        rows = connection.execute(select(spans).where(spans.c.trace_id == trace_id)).all()
        root = next(row for row in rows if row.parent_id is None)
        length = root.end_ns - root.start_ns
        for row in rows:
            if row.kind in _PHASES:
                begin, end = _PHASES[row.kind]
                connection.execute(
                    update(spans)
                    .where(spans.c.span_id == row.span_id)
                    .values(
                        start_ns=root.start_ns + int(length * begin),
                        end_ns=root.start_ns + int(length * end),
                    )
                )


def build(
    engine: Engine, *, count: int = 60, chunk_ids: tuple[str, ...] = ("c1", "c2")
) -> ConsoleData:
    now = time.time()
    data = ConsoleData(now=now)
    for number in range(count):  # one every 20 minutes, newest first
        status = "error" if number % 7 == 3 else "ok"
        trace_id = make_trace(
            engine,
            stack=STACK,
            question=f"How do I do task {number}?",
            answer=f"Answer {number}: run slmops.",
            started_at=now - 60 - number * 1200,
            duration_ms=300.0 + (number % 10) * 150,
            refused=number % 5 == 4,
            relevance=0.2 if number % 6 == 5 else 0.8,
            status=status,
            chunk_ids=chunk_ids,
        )
        stagger_spans(engine, trace_id)
        data.stack_ids.append(trace_id)
        if status == "error":
            data.errors.append(trace_id)
    data.slow_id = make_trace(
        engine, stack=STACK, question="A slow one", started_at=now - 30, duration_ms=9000.0
    )
    data.stack_ids.insert(0, data.slow_id)
    for number in range(5):
        trace_id = make_trace(
            engine, stack=OTHER, question=f"Chat {number}", started_at=now - 90 - number * 600
        )
        set_model(engine, trace_id, "registry:support-model@3")
        data.other_ids.append(trace_id)
    data.script_id = make_trace(
        engine,
        stack=OTHER,
        question=SCRIPT_QUESTION,
        answer=SCRIPT_ANSWER,
        started_at=now - 20,
        chunk_ids=chunk_ids,
    )
    data.positive_id, data.negative_id = data.stack_ids[2], data.stack_ids[5]
    record_feedback(engine, {"trace_id": data.positive_id, "score": 1}, now=now - 50)
    record_feedback(
        engine,
        {"trace_id": data.negative_id, "score": 0, "comment": "cites the wrong file"},
        now=now - 40,
    )
    add_rule(engine, STACK, "error_rate > 0.05", [], list(BASE_FIGURES), now=now - 3600)
    add_rule(engine, OTHER, "p95_latency_ms > 60000", [], list(BASE_FIGURES), now=now - 3600)
    evaluate_rules(
        engine,
        lambda stack, _figure, _window, _now: 0.2 if stack == STACK else 1000.0,
        now=now - 10,
        stack=STACK,
    )
    return data
