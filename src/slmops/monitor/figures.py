"""Monitored figures of a stack over a time window: traffic, errors, refusals, latency,
tokens, retrieval relevance, online scores and feedback.

Figures are computed from a :class:`Tally` (counts, sums and a latency histogram) so the
same arithmetic serves live traces and the hourly rollups retention keeps after deleting
old traces (see :mod:`slmops.monitor.retention`).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, case, func, select

from slmops.store.schema import feedback, monitor_rollups, monitor_scores, spans, traces

LOW_RELEVANCE = 0.3
"""A question whose best passage relevance is below this is off the corpus' topics (the
cite step refuses below the same default)."""

_BUCKET_GROWTH = 1.05  # latency histogram buckets 5% apart: percentiles within ~2.5%

BASE_FIGURES: dict[str, str] = {
    "requests": "traces of the stack in the window",
    "error_rate": "share of traces that failed",
    "refusal_rate": "share of cited answers refused by the cite step",
    "p50_latency_ms": "median trace duration",
    "p95_latency_ms": "95th percentile trace duration",
    "mean_prompt_tokens": "prompt tokens per trace (all model calls)",
    "mean_completion_tokens": "generated tokens per trace (all model calls)",
    "low_relevance_share": f"share of questions whose best passage relevance < {LOW_RELEVANCE}",
    "feedback_count": "scored feedback given in the window",
    "feedback_positive_rate": "share of scored feedback that was positive (>= 0.5)",
    "scored": "traces scored by online evaluation in the window",
}


LIVE_TRAFFIC = and_(
    traces.c.attributes["slmops.request_id"].as_string().is_not(None),
    traces.c.attributes["slmops.shadow_of"].as_string().is_(None),
    traces.c.attributes["slmops.origin"].as_string().is_(None),
)
"""Traces of requests a server answered: eval runs, CLI runs and console playground runs
are no users' traffic, and a shadow run (another version repeating a request after the
answer was sent) would mix two versions' figures."""


def _bucket(latency_ms: float) -> int:
    return math.floor(math.log(max(latency_ms, 1.0), _BUCKET_GROWTH))


@dataclass
class Tally:
    """What figures are computed from; adding two tallies adds their windows."""

    requests: int = 0
    errors: int = 0
    cited: int = 0  # answers that went through a cite step
    refused: int = 0
    with_relevance: int = 0
    low_relevance: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_buckets: dict[str, int] = field(default_factory=dict)  # bucket -> traces
    latencies: list[float] = field(default_factory=list)  # exact, while traces exist
    scores: dict[str, list[float]] = field(default_factory=dict)  # metric -> [sum, count]
    feedback_positive: int = 0
    feedback_scored: int = 0
    exact: bool = True  # False once a rollup (histogram only) is added

    def add_latency(self, latency_ms: float) -> None:
        self.latencies.append(latency_ms)
        key = str(_bucket(latency_ms))
        self.latency_buckets[key] = self.latency_buckets.get(key, 0) + 1

    def merge(self, other: Tally) -> None:
        for name in ("requests", "errors", "cited", "refused", "with_relevance"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("low_relevance", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.feedback_positive += other.feedback_positive
        self.feedback_scored += other.feedback_scored
        for key, count in other.latency_buckets.items():
            self.latency_buckets[key] = self.latency_buckets.get(key, 0) + count
        for metric, (total, scored) in other.scores.items():
            mine = self.scores.setdefault(metric, [0.0, 0])
            mine[0] += total
            mine[1] += scored
        self.latencies += other.latencies
        self.exact = self.exact and other.exact

    def to_rollup(self) -> dict[str, Any]:
        """The stored form (no per-trace latencies: an hour keeps its histogram)."""
        stored = asdict(self)
        del stored["latencies"], stored["exact"]
        return stored

    @classmethod
    def from_rollup(cls, stored: dict[str, Any]) -> Tally:
        return cls(
            **{k: v for k, v in stored.items() if k in cls.__dataclass_fields__}, exact=False
        )

    def percentile(self, q: float) -> float | None:
        if self.exact:
            return float(np.percentile(self.latencies, q)) if self.latencies else None
        total = sum(self.latency_buckets.values())
        if not total:
            return None
        seen, rank = 0, q / 100 * total
        for key in sorted(self.latency_buckets, key=int):
            seen += self.latency_buckets[key]
            if seen >= rank:
                return float(_BUCKET_GROWTH ** (int(key) + 0.5))
        return None

    def figures(self) -> dict[str, float | None]:
        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        figures: dict[str, float | None] = {
            "requests": float(self.requests),
            "error_rate": share(self.errors, self.requests),
            "refusal_rate": share(self.refused, self.cited),
            "p50_latency_ms": self.percentile(50),
            "p95_latency_ms": self.percentile(95),
            "mean_prompt_tokens": share(self.prompt_tokens, self.requests),
            "mean_completion_tokens": share(self.completion_tokens, self.requests),
            "low_relevance_share": share(self.low_relevance, self.with_relevance),
            "feedback_count": float(self.feedback_scored),
            "feedback_positive_rate": share(self.feedback_positive, self.feedback_scored),
            "scored": float(max((int(c) for _, c in self.scores.values()), default=0)),
        }
        for metric, (total, count) in sorted(self.scores.items()):
            figures[metric] = total / count if count else None
        return figures


def _attribute(name: str) -> Any:
    return spans.c.attributes[name]


def _connected(source: Engine | Connection) -> AbstractContextManager[Connection]:
    return source.connect() if isinstance(source, Engine) else nullcontext(source)


def live_tally(source: Engine | Connection, stack: str, start: float, end: float) -> Tally:
    """The tally of ``stack``'s stored traces that started in [start, end) and of their
    online scores: what retention rolls up before deleting them. Feedback and stored
    rollups are not counted (:func:`tally` adds them)."""
    counted = Tally()
    in_window = and_(
        traces.c.name == stack,
        traces.c.started_at >= start,
        traces.c.started_at < end,
        LIVE_TRAFFIC,
    )
    with _connected(source) as connection:
        for status, duration in connection.execute(
            select(traces.c.status, traces.c.duration_ms).where(in_window)
        ):
            counted.requests += 1
            counted.errors += status != "ok"
            counted.add_latency(float(duration))
        window_ids = select(traces.c.trace_id).where(in_window)
        tokens = connection.execute(
            select(
                func.sum(_attribute("gen_ai.usage.input_tokens").as_integer()),
                func.sum(_attribute("gen_ai.usage.output_tokens").as_integer()),
            ).where(spans.c.trace_id.in_(window_ids), spans.c.kind == "llm")
        ).one()
        counted.prompt_tokens, counted.completion_tokens = int(tokens[0] or 0), int(tokens[1] or 0)
        relevance = _attribute("slmops.cite.relevance").as_float()
        cite = connection.execute(
            select(
                func.count(),
                func.sum(case((_attribute("slmops.cite.refused").as_boolean(), 1), else_=0)),
                func.count(relevance),
                func.sum(case((relevance < LOW_RELEVANCE, 1), else_=0)),
            ).where(spans.c.trace_id.in_(window_ids), spans.c.kind == "cite")
        ).one()
        counted.cited, counted.refused = int(cite[0] or 0), int(cite[1] or 0)
        counted.with_relevance, counted.low_relevance = int(cite[2] or 0), int(cite[3] or 0)
        for metric, total, count in connection.execute(
            select(
                monitor_scores.c.metric,
                func.sum(monitor_scores.c.value),
                func.count(monitor_scores.c.value),
            )
            .where(
                monitor_scores.c.stack == stack,
                monitor_scores.c.trace_started_at >= start,
                monitor_scores.c.trace_started_at < end,
            )
            .group_by(monitor_scores.c.metric)
        ):
            counted.scores[metric] = [float(total or 0.0), int(count)]
    return counted


def stored_rollups(source: Engine | Connection, stack: str, start: float, end: float) -> Tally:
    """The merged hourly rollups of ``stack`` whose hour starts in [start, end) (an empty,
    exact tally when there are none)."""
    merged = Tally()
    with _connected(source) as connection:
        rows = connection.execute(
            select(monitor_rollups.c.figures).where(
                monitor_rollups.c.stack == stack,
                monitor_rollups.c.hour >= start,
                monitor_rollups.c.hour < end,
            )
        )
        for row in rows:
            merged.merge(Tally.from_rollup(row.figures))
    return merged


def tally(engine: Engine, stack: str, start: float, end: float) -> Tally:
    """The tally of ``stack``'s traces that started in [start, end), with the hourly
    rollups of any hours in it whose traces retention has deleted and the feedback given
    in the window (feedback is never rolled up: retention keeps it)."""
    with engine.connect() as connection:
        counted = live_tally(connection, stack, start, end)
        positive, scored = connection.execute(
            select(
                func.sum(case((feedback.c.score >= 0.5, 1), else_=0)), func.count(feedback.c.score)
            ).where(
                feedback.c.stack == stack,
                feedback.c.created_at >= start,
                feedback.c.created_at < end,
            )
        ).one()
        counted.feedback_positive, counted.feedback_scored = int(positive or 0), int(scored or 0)
        counted.merge(stored_rollups(connection, stack, start, end))
    return counted


def window_figures(engine: Engine, stack: str, start: float, end: float) -> dict[str, float | None]:
    return tally(engine, stack, start, end).figures()


def windows(start: float, end: float, step_s: float) -> list[tuple[float, float]]:
    """Consecutive windows of ``step_s`` ending at ``end`` and covering [start, end) (the
    oldest one shorter when the span is not a multiple of the step)."""
    bounds: list[tuple[float, float]] = []
    right = end
    while right - start > 1e-9:
        left = max(start, right - step_s)
        bounds.append((left, right))
        right = left
    return bounds[::-1]
