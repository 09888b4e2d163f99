"""``/monitor`` (every stack with traffic or alert rules) and ``/monitor/{stack}`` (figures per
window as charts, alert rules and events, and drift on request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from slmops.errors import ConfigError, SlmopsError
from slmops.monitor.alerts import list_events, list_rules, parse_duration
from slmops.monitor.figures import window_figures, windows
from slmops.monitor.shifts import DriftReport, drift_report
from slmops.ui.charts import LineChart, line_chart
from slmops.ui.formatting import milliseconds, share, when
from slmops.ui.trace_search import traffic_by_stack

if TYPE_CHECKING:
    from slmops.ui.app import Console

MAX_WINDOWS = 200
OVERVIEW_WINDOW_S = 24 * 3600.0


@dataclass(frozen=True)
class ChartGroup:
    title: str
    figures: tuple[tuple[str, str], ...]  # (figure, legend)
    fmt: Callable[[float], str]
    y_max: float | None = None


def _count(value: float) -> str:
    return f"{value:.0f}"


CHART_GROUPS = (
    ChartGroup("Requests", (("requests", "requests"),), _count),
    ChartGroup(
        "Error and refusal rate",
        (("error_rate", "errors"), ("refusal_rate", "refusals")),
        share,
        1.0,
    ),
    ChartGroup("Latency", (("p50_latency_ms", "p50"), ("p95_latency_ms", "p95")), milliseconds),
    ChartGroup(
        "Tokens per request",
        (("mean_prompt_tokens", "prompt"), ("mean_completion_tokens", "completion")),
        _count,
    ),
    ChartGroup("Low relevance share", (("low_relevance_share", "low relevance"),), share, 1.0),
    ChartGroup(
        "Online scores",
        (
            ("faithfulness", "faithfulness"),
            ("citation_support", "citation support"),
            ("retrieval_relevance", "retrieval relevance"),
        ),
        lambda v: f"{v:.2f}",
        1.0,
    ),
    ChartGroup("Feedback positive rate", (("feedback_positive_rate", "positive"),), share, 1.0),
)


def charts_for(
    bounds: list[tuple[float, float]], rows: list[dict[str, float | None]]
) -> list[LineChart]:
    labels = [when(start)[5:16] for start, _ in bounds]
    return [
        line_chart(
            group.title,
            labels,
            {legend: [row.get(figure) for row in rows] for figure, legend in group.figures},
            fmt=group.fmt,
            y_max=group.y_max,
        )
        for group in CHART_GROUPS
    ]


def _span(window: str, last: str) -> tuple[float, float]:
    step, span = parse_duration(window), parse_duration(last)
    if step <= 0:
        raise ConfigError(f"window {window} must be longer than 0s")
    if span < step:
        raise ConfigError(f"last {last} is shorter than one window of {window}")
    if span / step > MAX_WINDOWS:
        raise ConfigError(f"last {last} / window {window} is over {MAX_WINDOWS} windows; widen one")
    return step, span


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    engine = console.workspace.engine

    @routes.get("/monitor", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        now = time.time()
        traffic = traffic_by_stack(engine, since=now - OVERVIEW_WINDOW_S)
        rules = list_rules(engine)
        names = sorted({*traffic, *(rule["stack"] for rule in rules)})
        stacks = [
            {
                "name": name,
                "figures": window_figures(engine, name, now - OVERVIEW_WINDOW_S, now),
                "rules": [rule for rule in rules if rule["stack"] == name],
            }
            for name in names
        ]
        return console.render(request, "monitor_index.html", title="Monitor", stacks=stacks)

    @routes.get("/monitor/{stack}", response_class=HTMLResponse)
    def stack_monitor(
        request: Request, stack: str, window: str = "1h", last: str = "24h", drift: int = 0
    ) -> HTMLResponse:
        step, span = _span(window, last)
        now = time.time()
        bounds = windows(now - span, now, step)
        rows = [window_figures(engine, stack, start, end) for start, end in bounds]
        report: DriftReport | None = None
        drift_error = ""
        if drift:
            start, end = bounds[-1]
            try:
                report = drift_report(
                    console.workspace,
                    stack,
                    (start, end),
                    (2 * start - end, start),
                    embed=console.embedder().embed,
                )
            except SlmopsError as exc:
                drift_error = str(exc)
        totals: dict[str, Any] = {
            "requests": sum(row["requests"] or 0 for row in rows),
            "rated": sum(row["feedback_count"] or 0 for row in rows),
        }
        return console.render(
            request,
            "monitor.html",
            title=f"Monitor · {stack}",
            stack=stack,
            window=window,
            last=last,
            charts=charts_for(bounds, rows),
            totals=totals,
            rules=list_rules(engine, stack),
            events=list_events(engine, stack=stack, limit=20),
            drift=report,
            drift_error=drift_error,
            drift_url=f"?{urlencode({'window': window, 'last': last, 'drift': 1})}#drift",
        )

    return routes
