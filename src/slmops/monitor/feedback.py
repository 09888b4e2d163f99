"""Human feedback on answers: users' thumbs or stars, reviewers' labels and corrections.

Feedback is keyed by the trace of the answer (or the request id the server returned with it),
validated whole before anything is written, and kept apart by source (``user`` from the API,
``reviewer`` from the review queue), several per trace. It is what turns production traffic
into evaluation and training data (see :mod:`slmops.monitor.trace_data`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Engine, and_, insert, or_, select

from slmops.core.runtime import get_runtime
from slmops.errors import NotFoundError, SlmopsError
from slmops.store.schema import feedback, traces

MAX_COMMENT_CHARS = 2_000
MAX_CORRECTION_CHARS = 8_000
MAX_LABELS = 20
_LABEL = re.compile(r"^[\w.:/-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{6,32}$")

Kind = Literal["positive", "negative", "corrected", "reviewed", "any"]
KINDS: tuple[str, ...] = ("positive", "negative", "corrected", "reviewed", "any")


class FeedbackError(SlmopsError):
    """Feedback that cannot be stored as given (the message names the field)."""


class FeedbackIn(BaseModel):
    """One piece of feedback as a client sends it (``POST /v1/feedback``, the CLI, Python).

    ``score`` is thumbs (0 down, 1 up) or stars (1-5). Without ``scale``, 0 and 1 read as
    thumbs and 2-5 as stars; give ``"scale": "stars"`` for a one-star rating."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    trace_id: str | None = None
    request_id: str | None = Field(None, max_length=128)
    score: int | None = None
    scale: Literal["thumbs", "stars"] | None = None
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    correction: str | None = Field(None, max_length=MAX_CORRECTION_CHARS)
    labels: list[str] = Field(default_factory=list, max_length=MAX_LABELS)
    source: Literal["user", "reviewer"] = "user"
    author: str | None = Field(None, max_length=100)

    @field_validator("trace_id")
    @classmethod
    def _trace_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.match(value.lower()):
            raise ValueError("must be 6-32 hexadecimal characters (the X-Slmops-Trace-Id header)")
        return value.lower() if value else value

    @field_validator("labels")
    @classmethod
    def _label_shape(cls, value: list[str]) -> list[str]:
        for label in value:
            if not _LABEL.match(label):
                raise ValueError(
                    f"label {label[:70]!r} must be 1-64 letters, digits or . : / - _ (no spaces)"
                )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _complete(self) -> FeedbackIn:
        if not self.trace_id and not self.request_id:
            raise ValueError("give trace_id or request_id (both are on every response)")
        if self.score is not None:
            low, high = (0, 1) if self.scale_used() == "thumbs" else (1, 5)
            if not low <= self.score <= high:
                raise ValueError(
                    f"score {self.score} is outside {low}-{high} for scale {self.scale_used()!r}"
                )
        if self.score is None and not (self.comment or self.correction or self.labels):
            raise ValueError("give at least one of score, comment, correction or labels")
        return self

    def scale_used(self) -> str:
        if self.scale is not None:
            return self.scale
        return "thumbs" if self.score is None or self.score in (0, 1) else "stars"

    def normalized(self) -> float | None:
        """The score on 0-1 (thumbs as given; stars 1-5 as 0, 0.25, ... 1)."""
        if self.score is None:
            return None
        return float(self.score) if self.scale_used() == "thumbs" else (self.score - 1) / 4


def parse_feedback(body: Any) -> FeedbackIn:
    """Validate a feedback body; errors name each bad field."""
    try:
        return FeedbackIn.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise FeedbackError(f"invalid feedback: {problems}") from None


def find_trace(engine: Engine, *, trace_id: str | None, request_id: str | None) -> tuple[str, str]:
    """(trace id, stack name) of the trace a feedback names, by id or unique prefix, or by
    the request id the server answered with."""
    with engine.connect() as connection:
        if trace_id:
            rows = connection.execute(
                select(traces.c.trace_id, traces.c.name)
                .where(traces.c.trace_id.startswith(trace_id))
                .limit(2)
            ).all()
            what = f"trace id {trace_id!r}"
        else:
            # The first trace of the request: a shadow run repeats the request id later
            # (and is marked a shadow only after it is stored), and nobody saw its answer.
            rows = connection.execute(
                select(traces.c.trace_id, traces.c.name)
                .where(
                    traces.c.attributes["slmops.request_id"].as_string() == request_id,
                    traces.c.attributes["slmops.shadow_of"].as_string().is_(None),
                )
                .order_by(traces.c.started_at)
                .limit(1)
            ).all()
            what = f"request id {request_id!r}"
    if not rows:
        raise NotFoundError(f"no stored trace for {what}")
    if len(rows) > 1 and trace_id:
        raise FeedbackError(f"{what} is ambiguous; give more of it")
    return rows[0][0], rows[0][1]


def record_feedback(
    engine: Engine,
    given: FeedbackIn | dict[str, Any],
    *,
    redact: Callable[[str], str] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Validate and store one piece of feedback in one transaction; returns the stored row.
    ``redact`` (the workspace's redaction) is applied to comment and correction first."""
    item = given if isinstance(given, FeedbackIn) else parse_feedback(given)
    trace_id, stack = find_trace(engine, trace_id=item.trace_id, request_id=item.request_id)
    clean = redact or (lambda text: text)
    row = {
        "trace_id": trace_id,
        "stack": stack,
        "source": item.source,
        "scale": item.scale_used(),
        "raw_score": item.score,
        "score": item.normalized(),
        "comment": clean(item.comment) if item.comment else None,
        "correction": clean(item.correction) if item.correction else None,
        "labels": item.labels,
        "author": clean(item.author) if item.author else None,
        "request_id": item.request_id,
        "created_at": time.time() if now is None else now,
    }
    with engine.begin() as connection:
        inserted = connection.execute(insert(feedback).values(**row)).inserted_primary_key
        row["id"] = inserted[0] if inserted else None
    return row


def parse_kinds(texts: str | Sequence[str]) -> list[str]:
    """Feedback kinds from comma-separated text (a CLI option, given once or repeated),
    checked against :data:`KINDS`."""
    given = [texts] if isinstance(texts, str) else list(texts)
    kinds = [kind.strip() for text in given for kind in text.split(",") if kind.strip()]
    _check_kinds(kinds)
    return kinds


def _check_kinds(kinds: Collection[str]) -> None:
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise FeedbackError(
            f"unknown feedback kind(s) {', '.join(sorted(unknown))}; kinds: {', '.join(KINDS)}"
        )


def kind_condition(kinds: Collection[str]) -> Any:
    """A SQL condition on feedback rows matching any of the kinds: positive (score >= 0.5),
    negative (score < 0.5), corrected (has a correction), reviewed (from a reviewer)."""
    _check_kinds(kinds)
    conditions = {
        "positive": feedback.c.score >= 0.5,
        "negative": feedback.c.score < 0.5,
        "corrected": feedback.c.correction.is_not(None),
        "reviewed": feedback.c.source == "reviewer",
        "any": feedback.c.id.is_not(None),
    }
    return or_(*(conditions[k] for k in kinds))


def list_feedback(
    engine: Engine,
    *,
    stack: str | None = None,
    kinds: Collection[str] = ("any",),
    source: str | None = None,
    since: float | None = None,
    limit: int | None = 50,
) -> list[dict[str, Any]]:
    """Stored feedback, newest first."""
    query = select(feedback).where(kind_condition(kinds)).order_by(feedback.c.created_at.desc())
    if stack:
        query = query.where(feedback.c.stack == stack)
    if source:
        query = query.where(feedback.c.source == source)
    if since is not None:
        query = query.where(feedback.c.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def feedback_by_trace(
    engine: Engine, stack: str, kinds: Collection[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every trace of ``stack`` with feedback of these kinds, with all its feedback (oldest
    first), so the newest correction or score wins where several were given."""
    chosen = (
        select(feedback.c.trace_id)
        .where(and_(feedback.c.stack == stack, kind_condition(kinds)))
        .distinct()
    )
    query = select(feedback).where(feedback.c.trace_id.in_(chosen)).order_by(feedback.c.created_at)
    grouped: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            grouped.setdefault(row.trace_id, []).append(dict(row._mapping))
    return grouped


def rate(
    trace_id: str,
    *,
    score: int | None = None,
    stars: bool = False,
    comment: str | None = None,
    correction: str | None = None,
    labels: Sequence[str] = (),
    author: str | None = None,
) -> dict[str, Any]:
    """Rate an answer from Python (``slmops.rate(result.trace_id, score=0, correction=...)``):
    stored as user feedback in the workspace of the current runtime (``use_workspace``),
    else the default workspace, with its redaction applied."""
    runtime = get_runtime()
    if runtime.workspace is None:
        raise FeedbackError("no workspace to store feedback in: use slmops.use_workspace()")
    redactor = runtime.tracer.redactor
    return record_feedback(
        runtime.workspace.engine,
        {
            "trace_id": trace_id,
            "score": score,
            "scale": "stars" if stars else None,
            "comment": comment,
            "correction": correction,
            "labels": list(labels),
            "author": author,
        },
        redact=redactor.redact if redactor else None,
    )
