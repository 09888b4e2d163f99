"""The review queue: a sample of live answers for a person to label, correct or approve.

:func:`review_queue` picks the traces to review: successful answers of one stack (never
shadow runs), narrowed by time, by the feedback users gave, or by a monitor signal (the cite
step's support and relevance, refusal), then a seeded sample of them. A review is stored as
feedback with source ``reviewer`` (:func:`record_review`), and a trace with such feedback
leaves the queue: quitting and running the same query again continues with what is left.

The sample is stable: each matching trace gets a rank from a hash of the seed and its id,
and the queue is the ``sample`` best-ranked traces *before* the reviewed ones are removed,
so reviewing some never pulls new traces in, and a larger ``sample`` extends the same
sample. ``order="worst"`` takes the traces with the lowest support (then relevance) instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, and_, case, func, not_, select

from slmops.errors import SlmopsError
from slmops.monitor.feedback import (
    FeedbackError,
    kind_condition,
    parse_feedback,
    record_feedback,
)
from slmops.monitor.figures import LIVE_TRAFFIC
from slmops.store.schema import feedback, spans, traces

Order = Literal["random", "worst"]
Verdict = Literal["good", "bad"]
REVIEWER_SOURCE = "reviewer"
_SCORES: dict[str, int] = {"good": 1, "bad": 0}


class ReviewError(SlmopsError):
    """A review query or a review that cannot be used as given."""


@dataclass(frozen=True)
class Candidate:
    """One trace that matches a review query, with the signals it is sampled by."""

    trace_id: str
    started_at: float
    support: float | None
    relevance: float | None
    refused: bool


def _reviews(reviewer: str | None) -> Any:
    """Feedback rows that count as this queue's reviews: any reviewer's, or ``reviewer``'s."""
    condition = feedback.c.source == REVIEWER_SOURCE
    return and_(condition, feedback.c.author == reviewer) if reviewer else condition


def _rank(seed: int, trace_id: str) -> str:
    return hashlib.sha256(f"{seed}:{trace_id}".encode()).hexdigest()


def candidates(
    engine: Engine,
    stack: str,
    *,
    since: float | None = None,
    until: float | None = None,
    feedback_kinds: Collection[str] = (),
    max_support: float | None = None,
    max_relevance: float | None = None,
    refused: bool | None = None,
    reviewer: str | None = None,
) -> list[Candidate]:
    """Every successful, non-shadow trace of ``stack`` matching the filters, reviewed or not,
    in time order. ``feedback_kinds`` keeps traces with feedback of any of those kinds
    (:func:`~slmops.monitor.feedback.kind_condition`), not counting this queue's own reviews.
    ``max_support``/``max_relevance`` keep traces whose cite step scored at most that (a
    trace without a cite step has no score and is left out); ``refused`` keeps refusals
    (True) or answers (False) as the cite step decided."""
    base = and_(traces.c.name == stack, traces.c.status == "ok", LIVE_TRAFFIC)
    if since is not None:
        base = and_(base, traces.c.started_at >= since)
    if until is not None:
        base = and_(base, traces.c.started_at < until)
    if feedback_kinds:
        given = select(feedback.c.trace_id).where(
            kind_condition(feedback_kinds), not_(_reviews(reviewer))
        )
        base = and_(base, traces.c.trace_id.in_(given))
    attributes = spans.c.attributes
    cite = (
        select(
            spans.c.trace_id.label("trace_id"),
            func.min(attributes["slmops.cite.support"].as_float()).label("support"),
            func.min(attributes["slmops.cite.relevance"].as_float()).label("relevance"),
            func.max(case((attributes["slmops.cite.refused"].as_boolean(), 1), else_=0)).label(
                "refused"
            ),
        )
        .where(spans.c.kind == "cite", spans.c.trace_id.in_(select(traces.c.trace_id).where(base)))
        .group_by(spans.c.trace_id)
        .subquery()
    )
    query = (
        select(traces.c.trace_id, traces.c.started_at, cite.c.support, cite.c.relevance)
        .add_columns(func.coalesce(cite.c.refused, 0).label("refused"))
        .select_from(traces.outerjoin(cite, cite.c.trace_id == traces.c.trace_id))
        .where(base)
        .order_by(traces.c.started_at, traces.c.trace_id)
    )
    if max_support is not None:
        query = query.where(cite.c.support <= max_support)
    if max_relevance is not None:
        query = query.where(cite.c.relevance <= max_relevance)
    if refused is not None:
        query = query.where(func.coalesce(cite.c.refused, 0) == (1 if refused else 0))
    with engine.connect() as connection:
        return [
            Candidate(
                trace_id=row.trace_id,
                started_at=float(row.started_at),
                support=None if row.support is None else float(row.support),
                relevance=None if row.relevance is None else float(row.relevance),
                refused=bool(row.refused),
            )
            for row in connection.execute(query)
        ]


def reviewed_traces(
    engine: Engine, trace_ids: Sequence[str], reviewer: str | None = None
) -> set[str]:
    """Those of ``trace_ids`` that have a review (by ``reviewer``, or by anyone)."""
    if not trace_ids:
        return set()
    query = (
        select(feedback.c.trace_id)
        .where(_reviews(reviewer), feedback.c.trace_id.in_(list(trace_ids)))
        .distinct()
    )
    with engine.connect() as connection:
        return {row.trace_id for row in connection.execute(query)}


def review_queue(
    engine: Engine,
    stack: str,
    *,
    sample: int,
    since: float | None = None,
    until: float | None = None,
    feedback: Collection[str] = (),  # kinds; the name shadows the table, unused here
    max_support: float | None = None,
    max_relevance: float | None = None,
    refused: bool | None = None,
    reviewer: str | None = None,
    seed: int = 0,
    order: Order = "random",  # "worst": the lowest support, then relevance, first
    include_reviewed: bool = False,
) -> list[str]:
    """The ids of the traces to review, in review order (time order; worst first with
    ``order="worst"``): the ``sample`` traces of :func:`candidates` a seeded rank picks,
    less those already reviewed (by ``reviewer`` when given, else by any reviewer) unless
    ``include_reviewed``. The same arguments give the same sample; reviews only shrink it."""
    if sample < 1:
        raise ReviewError(f"sample must be at least 1, not {sample}")
    if order not in ("random", "worst"):
        raise ReviewError(f"order must be 'random' or 'worst', not {order!r}")
    pool = candidates(
        engine,
        stack,
        since=since,
        until=until,
        feedback_kinds=feedback,
        max_support=max_support,
        max_relevance=max_relevance,
        refused=refused,
        reviewer=reviewer,
    )
    if order == "worst":
        chosen = sorted(
            pool,
            key=lambda c: (
                c.support is None,
                c.support or 0.0,
                c.relevance is None,
                c.relevance or 0.0,
                _rank(seed, c.trace_id),
            ),
        )[:sample]
    else:
        chosen = sorted(pool, key=lambda c: _rank(seed, c.trace_id))[:sample]
        chosen.sort(key=lambda c: (c.started_at, c.trace_id))
    ids = [c.trace_id for c in chosen]
    if include_reviewed:
        return ids
    done = reviewed_traces(engine, ids, reviewer)
    return [t for t in ids if t not in done]


def parse_labels(text: str) -> list[str]:
    """Comma-separated labels, checked the way feedback checks them (letters, digits and
    ``. : / - _``, at most 20); raises :class:`~slmops.monitor.feedback.FeedbackError`."""
    labels = [label.strip() for label in text.split(",") if label.strip()]
    try:
        return parse_feedback({"trace_id": "000000", "score": 1, "labels": labels}).labels
    except FeedbackError as exc:
        message = str(exc).removeprefix("invalid feedback: labels: ").replace("Value error, ", "")
        raise FeedbackError(f"invalid labels: {message}") from None


def record_review(
    engine: Engine,
    trace_id: str,
    *,
    verdict: Verdict | None,
    correction: str | None = None,
    labels: Sequence[str] = (),
    comment: str | None = None,
    reviewer: str | None = None,
    redact: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Store one review of a trace as feedback (source ``reviewer``, thumbs: good 1, bad 0;
    no verdict: labels, comment or correction only); returns the stored row. ``redact`` (the
    workspace's redaction) applies to the comment and the correction."""
    if verdict is not None and verdict not in _SCORES:
        raise ReviewError(f"verdict must be 'good' or 'bad', not {verdict!r}")
    item = parse_feedback(
        {
            "trace_id": trace_id,
            "score": None if verdict is None else _SCORES[verdict],
            "scale": "thumbs",
            "correction": correction or None,
            "labels": list(labels),
            "comment": comment or None,
            "source": REVIEWER_SOURCE,
            "author": reviewer or None,
        }
    )
    return record_feedback(engine, item, redact=redact)
