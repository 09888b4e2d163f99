"""The trace list's query: filters over stored traces, newest first, a page at a time.

Pages are keyset-paginated on (started_at, trace_id), so the query walks the ``started_at``
index from a cursor instead of counting past an offset: page 200 costs what page 1 costs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlencode

from sqlalchemy import Engine, Select, exists, func, or_, select

from slmops.errors import SlmopsError
from slmops.monitor.alerts import AlertRuleError, parse_duration
from slmops.monitor.feedback import kind_condition
from slmops.store.schema import feedback, spans, traces

PAGE_SIZE = 50
STATUSES = ("ok", "error")
FEEDBACK_CHOICES: dict[str, tuple[str, ...]] = {
    "rated": ("any",),
    "positive": ("positive",),
    "negative": ("negative",),
    "corrected": ("corrected",),
    "reviewed": ("reviewed",),
}
Direction = Literal["older", "newer"]


class FilterError(SlmopsError):
    """A filter value that cannot be used (the message names the field)."""


@dataclass(frozen=True)
class TraceFilter:
    """What the trace list shows; every field is optional."""

    stack: str = ""
    status: str = ""
    last: str = ""  # a duration: 1h, 24h, 7d
    since: str = ""  # local date-time, as an <input type=datetime-local> sends it
    until: str = ""
    min_ms: str = ""
    feedback: str = ""  # a key of FEEDBACK_CHOICES
    model: str = ""  # a substring of the model version that answered
    errors: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TraceFilter:
        """The filter a query string asks for; values that cannot be used are recorded in
        ``errors`` (field -> message) and ignored, so the page still shows."""
        value = {name: query.get(name, "").strip() for name in _FIELDS}
        chosen = cls(
            stack=value["stack"],
            status=value["status"],
            last=value["last"],
            since=value["since"],
            until=value["until"],
            min_ms=value["min_ms"],
            feedback=value["feedback"],
            model=value["model"],
        )
        errors: dict[str, str] = {}
        if chosen.status and chosen.status not in STATUSES:
            errors["status"] = f"status must be one of {', '.join(STATUSES)}"
        if chosen.feedback and chosen.feedback not in FEEDBACK_CHOICES:
            errors["feedback"] = f"feedback must be one of {', '.join(FEEDBACK_CHOICES)}"
        for name in ("last", "since", "until", "min_ms"):
            try:
                _bound(chosen, name)
            except FilterError as exc:
                errors[name] = str(exc)
        return replace(chosen, errors=errors)

    def query_string(self, **extra: str) -> str:
        """The filter as a query string (for links that keep it), plus ``extra``."""
        values = {name: getattr(self, name) for name in _FIELDS if getattr(self, name)}
        values.update({k: v for k, v in extra.items() if v})
        return urlencode(values)

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in _FIELDS)


_FIELDS = ("stack", "status", "last", "since", "until", "min_ms", "feedback", "model")


def _bound(chosen: TraceFilter, name: str) -> float | None:
    value = getattr(chosen, name)
    if not value:
        return None
    if name == "last":
        try:
            return parse_duration(value)
        except AlertRuleError:
            raise FilterError("last must be a duration such as 30m, 24h or 7d") from None
    if name == "min_ms":
        try:
            number = float(value)
        except ValueError:
            raise FilterError("min latency must be a number of milliseconds") from None
        if number < 0 or number != number:
            raise FilterError("min latency must be 0 or more milliseconds")
        return number
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise FilterError(f"{name} must be a date and time such as 2026-01-31T14:00") from None


def _conditions(chosen: TraceFilter, now: float) -> list[Any]:
    conditions: list[Any] = []
    bad = chosen.errors
    if chosen.stack:
        conditions.append(traces.c.name == chosen.stack)
    if chosen.status and "status" not in bad:
        conditions.append(traces.c.status == chosen.status)
    for name, column_test in (
        ("last", lambda v: traces.c.started_at >= now - v),
        ("since", lambda v: traces.c.started_at >= v),
        ("until", lambda v: traces.c.started_at < v),
        ("min_ms", lambda v: traces.c.duration_ms >= v),
    ):
        if getattr(chosen, name) and name not in bad:
            conditions.append(column_test(_bound(chosen, name)))
    if chosen.feedback and "feedback" not in bad:
        rated = select(feedback.c.trace_id).where(kind_condition(FEEDBACK_CHOICES[chosen.feedback]))
        conditions.append(traces.c.trace_id.in_(rated))
    if chosen.model:
        answered_by = spans.c.attributes["gen_ai.response.model"].as_string()
        conditions.append(
            exists().where(
                spans.c.trace_id == traces.c.trace_id,
                spans.c.kind == "llm",
                answered_by.contains(chosen.model, autoescape=True),
            )
        )
    return conditions


@dataclass
class TracePage:
    """One page of matching traces (newest first) and the cursors of its neighbours."""

    rows: list[dict[str, Any]]
    older: str | None  # cursor of the next page back in time, None on the last page
    newer: str | None  # cursor of the page before this one, None on the first page


def _cursor(row: Mapping[str, Any]) -> str:
    return f"{row['started_at']!r}_{row['trace_id']}"


def parse_cursor(text: str) -> tuple[float, str]:
    started, _, trace_id = text.partition("_")
    try:
        return float(started), trace_id
    except ValueError:
        raise FilterError("the page cursor is malformed; start again from the first page") from None


def page_query(
    chosen: TraceFilter,
    *,
    now: float,
    cursor: str = "",
    direction: Direction = "older",
    limit: int = PAGE_SIZE,
) -> Select[Any]:
    """The query of one page (``limit + 1`` rows, so the caller knows whether more follow)."""
    conditions = _conditions(chosen, now)
    started_at, trace_id = traces.c.started_at, traces.c.trace_id
    if cursor:
        started, last_id = parse_cursor(cursor)
        # The plain range on started_at lets the database walk its index from the cursor;
        # the second test breaks ties between traces that started at the same instant.
        if direction == "older":
            conditions += [started_at <= started, or_(started_at < started, trace_id < last_id)]
        else:
            conditions += [started_at >= started, or_(started_at > started, trace_id > last_id)]
    order = (started_at.desc(), trace_id.desc()) if direction == "older" else (started_at, trace_id)
    return select(traces).where(*conditions).order_by(*order).limit(limit + 1)


def search_traces(
    engine: Engine,
    chosen: TraceFilter,
    *,
    now: float,
    cursor: str = "",
    direction: Direction = "older",
    limit: int = PAGE_SIZE,
) -> TracePage:
    """A page of the traces that match ``chosen``: the ``limit`` newest before ``cursor``
    (``direction="older"``), or the ``limit`` just after it (``"newer"``)."""
    query = page_query(chosen, now=now, cursor=cursor, direction=direction, limit=limit)
    with engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "newer":
        rows.reverse()
    if not rows:
        return TracePage([], None, None)
    has_older = more if direction == "older" else True
    has_newer = bool(cursor) if direction == "older" else more
    return TracePage(
        rows,
        older=_cursor(rows[-1]) if has_older else None,
        newer=_cursor(rows[0]) if has_newer else None,
    )


def trace_names(engine: Engine) -> list[str]:
    """Every name (stack) that has stored traces, for the filter's choices."""
    with engine.connect() as connection:
        return sorted(str(row[0]) for row in connection.execute(select(traces.c.name).distinct()))


def feedback_summary(engine: Engine, trace_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per trace: how many feedback rows, and how many positive and negative scores."""
    summary: dict[str, dict[str, int]] = {}
    if not trace_ids:
        return summary
    with engine.connect() as connection:
        for trace_id, score in connection.execute(
            select(feedback.c.trace_id, feedback.c.score).where(feedback.c.trace_id.in_(trace_ids))
        ):
            counts = summary.setdefault(trace_id, {"count": 0, "positive": 0, "negative": 0})
            counts["count"] += 1
            if score is not None:
                counts["positive" if score >= 0.5 else "negative"] += 1
    return summary


def traffic_by_stack(engine: Engine, *, since: float) -> dict[str, int]:
    """Traces per name (stack) started since ``since`` (a range on the started_at index)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(traces.c.name, func.count())
            .where(traces.c.started_at >= since)
            .group_by(traces.c.name)
            .order_by(traces.c.name)
        )
        return {str(name): int(count) for name, count in rows}
