"""``/traces`` (the filterable list), ``/traces/{id}`` (one trace as a waterfall, with its
passages, versions and feedback) and the feedback form's POST."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from slmops.monitor.feedback import FeedbackError, FeedbackIn, record_feedback
from slmops.monitor.records import load_records, record_of
from slmops.store.redaction import Redactor
from slmops.store.traces import get_trace
from slmops.ui.forms import Form, read_form
from slmops.ui.trace_search import (
    FEEDBACK_CHOICES,
    STATUSES,
    TraceFilter,
    feedback_summary,
    search_traces,
    trace_names,
)
from slmops.ui.trace_view import feedback_for_trace, retrieved_passages, versions_of
from slmops.ui.waterfall import waterfall

if TYPE_CHECKING:
    from slmops.ui.app import Console

_RATINGS = {"up": 1, "down": 0}
_FORM_FIELD = {"score": "rating", "labels": "labels", "comment": "comment"}


def _feedback_body(form: Form, trace_id: str) -> dict[str, Any]:
    rating = form.get("rating")
    return {
        "trace_id": trace_id,
        "score": _RATINGS.get(rating, rating or None),  # anything else is named invalid
        "scale": "thumbs",
        "comment": form.get("comment") or None,
        "correction": form.get("correction") or None,
        "labels": [label for label in re.split(r"[,\s]+", form.get("labels")) if label],
        "source": form.get("source") or "user",
        "author": form.get("author") or None,
    }


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """Validation errors by the form field they belong to ("form" for the whole form)."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = str(error["loc"][0]) if error["loc"] else "form"
        field = _FORM_FIELD.get(loc, loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc == "score" and error["type"] in ("int_parsing", "int_type"):
            message = "choose thumbs up or thumbs down"
        errors.setdefault(field, message)
    return errors


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    engine = console.workspace.engine

    @routes.get("/traces", response_class=HTMLResponse)
    def trace_list(
        request: Request, older: str = "", newer: str = "", limit: int = 50
    ) -> HTMLResponse:
        chosen = TraceFilter.from_query(request.query_params)
        page = search_traces(
            engine,
            chosen,
            now=time.time(),
            cursor=newer or older,
            direction="newer" if newer else "older",
            limit=max(1, min(limit, 200)),
        )
        ids = [row["trace_id"] for row in page.rows]
        records = {record.trace_id: record for record in load_records(engine, ids)}
        return console.render(
            request,
            "traces.html",
            status_code=400 if chosen.errors else 200,
            title="Traces",
            filter=chosen,
            page=page,
            records=records,
            feedback=feedback_summary(engine, ids),
            names=trace_names(engine),
            statuses=STATUSES,
            feedback_choices=list(FEEDBACK_CHOICES),
        )

    def trace_page(
        request: Request,
        trace_id: str,
        *,
        status_code: int = 200,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        saved: int | None = None,
    ) -> HTMLResponse:
        trace, span_rows = get_trace(engine, trace_id)
        record = record_of(trace, span_rows)
        signed_in = console.auth.enabled and console.auth.authenticated(request)
        return console.render(
            request,
            "trace.html",
            status_code=status_code,
            title=f"{trace['name']} · {trace['trace_id'][:12]}",
            trace=trace,
            record=record,
            rows=waterfall(span_rows),
            retrieved=retrieved_passages(console.workspace, span_rows),
            versions=versions_of(span_rows),
            feedback=feedback_for_trace(engine, trace["trace_id"]),
            form=form or {"source": "reviewer" if signed_in else "user"},
            errors=errors or {},
            saved=saved,
        )

    @routes.get("/traces/{trace_id}", response_class=HTMLResponse)
    def show_trace(request: Request, trace_id: str, saved: int | None = None) -> HTMLResponse:
        return trace_page(request, trace_id, saved=saved)

    @routes.post("/traces/{trace_id}/feedback", response_class=HTMLResponse)
    async def post_feedback(request: Request, trace_id: str) -> Response:
        console.auth.require_actor(request)
        form = await read_form(request)
        trace, _ = await run_in_threadpool(get_trace, engine, trace_id)  # 404 when unknown
        values = {
            name: form.get(name)
            for name in ("rating", "comment", "correction", "labels", "source", "author")
        }
        try:
            given = FeedbackIn.model_validate(_feedback_body(form, trace["trace_id"]))
        except ValidationError as exc:
            return await run_in_threadpool(
                trace_page,
                request,
                trace_id,
                status_code=400,
                form=values,
                errors=_field_errors(exc),
            )
        settings = console.workspace.settings
        redactor = Redactor.from_settings(settings.redact, settings.redact_patterns)
        try:
            stored = await run_in_threadpool(
                record_feedback, engine, given, redact=redactor.redact if redactor else None
            )
        except FeedbackError as exc:
            return await run_in_threadpool(
                trace_page,
                request,
                trace_id,
                status_code=400,
                form=values,
                errors={"form": str(exc)},
            )
        return RedirectResponse(
            f"{console.base(request)}/traces/{trace['trace_id']}?saved={stored['id']}#feedback",
            status_code=303,
        )

    return routes
