"""Persisted traces: written once per finished run, read by the CLI, server and monitor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from slmops.errors import NotFoundError
from slmops.store.schema import spans, traces


def save_trace(engine: Engine, trace: dict[str, Any], span_rows: Sequence[dict[str, Any]]) -> None:
    """Write one trace and its spans in a single transaction (a trace is whole or absent)."""
    with engine.begin() as connection:
        # A re-exported trace id (e.g. after a retry of the export) replaces the old copy.
        connection.execute(delete(traces).where(traces.c.trace_id == trace["trace_id"]))
        connection.execute(insert(traces), [trace])
        if span_rows:
            connection.execute(insert(spans), list(span_rows))


def set_trace_attributes(engine: Engine, trace_id: str, attributes: dict[str, Any]) -> None:
    """Add attributes to a stored trace (a shadow run, say, names the answer it shadowed)."""
    with engine.begin() as connection:
        row = connection.execute(
            select(traces.c.attributes).where(traces.c.trace_id == trace_id)
        ).first()
        if row is not None:
            connection.execute(
                update(traces)
                .where(traces.c.trace_id == trace_id)
                .values(attributes={**(row[0] or {}), **attributes})
            )


def list_traces(
    engine: Engine, *, limit: int = 20, status: str | None = None
) -> list[dict[str, Any]]:
    query = select(traces).order_by(traces.c.started_at.desc()).limit(limit)
    if status:
        query = query.where(traces.c.status == status)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def count_traces(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(traces)).scalar_one())


def get_trace(engine: Engine, trace_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A trace and its spans (ordered by start) by full id or unique prefix of at least 6."""
    if len(trace_id) < 6:
        raise NotFoundError(f"trace id {trace_id!r} is too short; give at least 6 characters")
    with engine.connect() as connection:
        rows = connection.execute(
            select(traces)
            .where(traces.c.trace_id.startswith(trace_id.lower(), autoescape=True))
            .limit(2)
        ).all()
        if not rows:
            raise NotFoundError(f"no trace with id {trace_id!r}; see 'slmops trace list'")
        if len(rows) > 1:
            raise NotFoundError(f"trace id prefix {trace_id!r} is ambiguous; give more of it")
        trace = dict(rows[0]._mapping)
        span_rows = connection.execute(
            select(spans).where(spans.c.trace_id == trace["trace_id"]).order_by(spans.c.start_ns)
        ).all()
    return trace, [dict(row._mapping) for row in span_rows]


def token_usage(spans: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(prompt, completion) tokens of every model call among a trace's spans."""
    prompt = sum(int(s["attributes"].get("gen_ai.usage.input_tokens", 0)) for s in spans)
    completion = sum(int(s["attributes"].get("gen_ai.usage.output_tokens", 0)) for s in spans)
    return prompt, completion
