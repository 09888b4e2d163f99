"""``/review`` (the stacks whose answers can be reviewed) and ``/review/{stack}``: the review
queue of ``slmops review`` in the browser, one trace at a time.

The query string holds what the CLI's options hold (sample, since, until, feedback,
max_support, max_relevance, refused, worst_first, seed, reviewer), so a queue is a URL to
share. A review (good, bad, a correction, labels) is stored as reviewer feedback with the
workspace's redaction (``POST /review/{stack}/{trace}``) and the browser is sent on to the
next trace; reviewed traces leave the queue, so opening the same URL later continues it.
Skipping moves on without storing anything (``after=TRACE``: the queue position).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from slmops.errors import NotFoundError, SlmopsError
from slmops.monitor.alerts import parse_duration
from slmops.monitor.feedback import KINDS, FeedbackError, kind_condition
from slmops.monitor.records import load_records
from slmops.monitor.review import (
    Verdict,
    parse_labels,
    record_review,
    review_queue,
    reviewed_traces,
)
from slmops.store.redaction import Redactor
from slmops.store.traces import get_trace
from slmops.ui.forms import read_form
from slmops.ui.trace_search import trace_names, traffic_by_stack
from slmops.ui.trace_view import retrieved_passages

if TYPE_CHECKING:
    from slmops.ui.app import Console

DEFAULT_SAMPLE = 20
MAX_SAMPLE = 1000
ACTIONS = ("good", "bad", "correct", "label")
_TRUE, _FALSE = ("1", "true", "yes", "on", "refused"), ("0", "false", "no", "answered")
_FIELDS = (
    "sample",
    "since",
    "until",
    "feedback",
    "max_support",
    "max_relevance",
    "refused",
    "worst_first",
    "seed",
    "reviewer",
)


@dataclass(frozen=True)
class ReviewQuery:
    """A review queue as its query string gives it (text as given, parsed on demand)."""

    sample: str = str(DEFAULT_SAMPLE)
    since: str = ""  # a duration: only traces from the last ...
    until: str = ""  # a duration: only traces older than ...
    feedback: str = ""  # comma-separated kinds
    max_support: str = ""
    max_relevance: str = ""
    refused: str = ""  # "" any, 1 refusals only, 0 answers only
    worst_first: str = ""
    seed: str = "0"
    reviewer: str = ""
    errors: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ReviewQuery:
        """The queue a query string asks for; a value that cannot be used is recorded in
        ``errors`` (parameter -> message)."""
        given = {name: query.get(name, "").strip() for name in _FIELDS}
        values: dict[str, Any] = {
            name: value or str(getattr(cls, name)) for name, value in given.items()
        }
        chosen = cls(**values)
        errors: dict[str, str] = {}
        for name in _FIELDS:
            try:
                chosen._parse(name, now=0.0)
            except (SlmopsError, ValueError) as exc:
                errors[name] = str(exc)
        return replace(chosen, errors=errors)

    def _parse(self, name: str, *, now: float) -> Any:
        value = getattr(self, name)
        if name in ("sample", "seed"):
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a whole number") from None
            if name == "sample" and not 1 <= number <= MAX_SAMPLE:
                raise ValueError(f"sample must be from 1 to {MAX_SAMPLE}, not {number}")
            return number
        if name in ("since", "until"):
            return now - parse_duration(value) if value else None
        if name == "feedback":
            kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
            if kinds:
                kind_condition(kinds)  # names an unknown kind
            return kinds
        if name in ("max_support", "max_relevance"):
            if not value:
                return None
            try:
                bound = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
            if not math.isfinite(bound):
                raise ValueError(f"{value!r} is not a finite number")
            return bound
        if name == "refused":
            lowered = value.lower()
            if lowered in _TRUE or lowered in _FALSE or not lowered:
                return None if not lowered else lowered in _TRUE
            raise ValueError("refused must be 1 (only refusals), 0 (only answers) or empty")
        if name == "worst_first":
            if value.lower() not in ("", *_TRUE, *_FALSE):
                raise ValueError("worst_first must be 1 or 0")
            return value.lower() in _TRUE
        if name == "reviewer":
            if len(value) > 100:
                raise ValueError("reviewer must be at most 100 characters")
            return value or None
        raise KeyError(name)

    def queue_arguments(self, now: float) -> dict[str, Any]:
        """``review_queue``'s keyword arguments (only for a query without errors)."""
        parsed = {name: self._parse(name, now=now) for name in _FIELDS}
        return {
            "sample": parsed["sample"],
            "since": parsed["since"],
            "until": parsed["until"],
            "feedback": parsed["feedback"],
            "max_support": parsed["max_support"],
            "max_relevance": parsed["max_relevance"],
            "refused": parsed["refused"],
            "reviewer": parsed["reviewer"],
            "seed": parsed["seed"],
            "order": "worst" if parsed["worst_first"] else "random",
        }

    @property
    def reviewer_name(self) -> str | None:
        return self.reviewer or None

    def query_string(self, **extra: str) -> str:
        """The query (values that differ from the defaults), plus ``extra``."""
        defaults = ReviewQuery()
        values = {
            name: getattr(self, name)
            for name in _FIELDS
            if getattr(self, name) and getattr(self, name) != getattr(defaults, name)
        }
        values.update({key: value for key, value in extra.items() if value})
        return urlencode(values)


@dataclass
class QueueState:
    """Where a reviewer stands in a queue: the sample, what is reviewed, what is next."""

    sampled: list[str]
    reviewed: set[str]
    todo: list[str]
    current: str | None  # the next trace to review after ``after`` (None: none left there)

    @property
    def position(self) -> int:
        """The current trace's place among the unreviewed ones (from 1; 0 when none)."""
        return self.todo.index(self.current) + 1 if self.current is not None else 0


def queue_state(
    console: Console, stack: str, chosen: ReviewQuery, after: str, now: float
) -> QueueState:
    """The sample as ``slmops review`` draws it, and the first unreviewed trace after the
    trace ``after`` (the one last reviewed or skipped) in queue order."""
    engine = console.workspace.engine
    sampled = review_queue(engine, stack, include_reviewed=True, **chosen.queue_arguments(now))
    reviewed = reviewed_traces(engine, sampled, chosen.reviewer_name)
    todo = [trace_id for trace_id in sampled if trace_id not in reviewed]
    start = sampled.index(after) + 1 if after in sampled else 0
    later = [trace_id for trace_id in sampled[start:] if trace_id not in reviewed]
    return QueueState(sampled, reviewed, todo, later[0] if later else None)


_ACTION_FIELDS = ("action", "correction", "labels", "comment")


def review_of(
    action: str, correction: str, labels_text: str
) -> tuple[Verdict | None, str | None, list[str]]:
    """(verdict, correction, labels) for a pressed button, as the CLI's keys give them:
    good, bad, correct (a correction, so bad) or label (labels alone)."""
    if action not in ACTIONS:
        raise FeedbackError(f"choose one of {', '.join(ACTIONS)}, not {action!r}")
    labels = parse_labels(labels_text) if labels_text else []
    if action == "correct" and not correction:
        raise FeedbackError("write the corrected answer before pressing Correct")
    if action == "good" and correction:
        raise FeedbackError("a correction says the answer was wrong: press Correct, not Good")
    if action == "label" and not labels:
        raise FeedbackError("write one or more labels before pressing Label")
    verdict: Verdict | None = None
    if action == "good":
        verdict = "good"
    elif action in ("bad", "correct"):
        verdict = "bad"
    return verdict, correction or None, labels


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    engine = console.workspace.engine

    def known_stack(stack: str) -> None:
        if stack not in trace_names(engine):
            raise NotFoundError(f"no stack {stack!r} has stored traces")

    @routes.get("/review", response_class=HTMLResponse)
    def review_index(request: Request) -> HTMLResponse:
        return console.render(
            request,
            "review_index.html",
            title="Review",
            stacks=traffic_by_stack(engine, since=0.0),
            default_sample=DEFAULT_SAMPLE,
        )

    def review_page(
        request: Request,
        stack: str,
        *,
        after: str = "",
        saved: str = "",
        status_code: int = 200,
        form: dict[str, str] | None = None,
        error: str = "",
    ) -> HTMLResponse:
        known_stack(stack)
        chosen = ReviewQuery.from_query(request.query_params)
        state = None
        record = None
        passages = None
        if not chosen.errors:
            state = queue_state(console, stack, chosen, after, time.time())
            if state.current is not None:
                found = load_records(engine, [state.current])
                record = found[0] if found else None
                if record is not None:
                    passages = retrieved_passages(console.workspace, record.spans)
        return console.render(
            request,
            "review.html",
            status_code=400 if chosen.errors else status_code,
            title=f"Review · {stack}",
            stack=stack,
            query=chosen,
            kinds=KINDS,
            state=state,
            record=record,
            passages=passages,
            after=after,
            saved=saved,
            form=form or {},
            error=error,
        )

    @routes.get("/review/{stack}", response_class=HTMLResponse)
    def show_queue(request: Request, stack: str, after: str = "", saved: str = "") -> HTMLResponse:
        return review_page(request, stack, after=after, saved=saved)

    @routes.post("/review/{stack}/{trace_id}", response_class=HTMLResponse)
    async def post_review(request: Request, stack: str, trace_id: str) -> Response:
        console.auth.require_actor(request)
        form = await read_form(request)
        trace, _ = await run_in_threadpool(get_trace, engine, trace_id)  # 404 when unknown
        if trace["name"] != stack:
            raise NotFoundError(f"trace {trace_id} is not one of stack {stack!r}'s")
        chosen = ReviewQuery.from_query(request.query_params)
        values = {name: form.get(name) for name in _ACTION_FIELDS}
        settings = console.workspace.settings
        redactor = Redactor.from_settings(settings.redact, settings.redact_patterns)
        try:
            verdict, correction, labels = review_of(
                values["action"], values["correction"], values["labels"]
            )
            stored = await run_in_threadpool(
                lambda: record_review(
                    engine,
                    trace["trace_id"],
                    verdict=verdict,
                    correction=correction,
                    labels=labels,
                    comment=values["comment"] or None,
                    reviewer=chosen.reviewer_name,
                    redact=redactor.redact if redactor else None,
                )
            )
        except SlmopsError as exc:  # FeedbackError, ReviewError
            # show the same trace again, with what was typed and why it was not stored
            message = str(exc)
            index_after = await run_in_threadpool(_position_before, console, stack, chosen, trace)
            return await run_in_threadpool(
                lambda: review_page(
                    request,
                    stack,
                    after=index_after,
                    status_code=400,
                    form=values,
                    error=message,
                )
            )
        target = chosen.query_string(after=trace["trace_id"], saved=str(stored["id"]))
        return RedirectResponse(
            f"{console.base(request)}/review/{stack}?{target}#review", status_code=303
        )

    return routes


def _position_before(
    console: Console, stack: str, chosen: ReviewQuery, trace: dict[str, Any]
) -> str:
    """The ``after`` that makes ``trace`` the current one again (the trace just before it in
    the sample, or "" when it is the first)."""
    if chosen.errors:
        return ""
    sampled = review_queue(
        console.workspace.engine,
        stack,
        include_reviewed=True,
        **chosen.queue_arguments(time.time()),
    )
    if trace["trace_id"] not in sampled:
        return ""
    index = sampled.index(trace["trace_id"])
    return sampled[index - 1] if index > 0 else ""
