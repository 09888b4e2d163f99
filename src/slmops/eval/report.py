"""The eval report: one self-contained HTML page (inline CSS and SVG, no network) with the
metrics, their distributions, the comparison with another run, and the worst cases with
their retrieved passages and trace ids."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from slmops.eval.compare import Comparison, compare_runs
from slmops.eval.runner import load_results, load_run
from slmops.store.workspace import Workspace

_BINS = 10


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    height: float
    label: str


def histogram(values: list[float], *, low: float = 0.0, high: float = 1.0) -> list[Bar]:
    """Bars (in a 0-100 x 0-100 box) of how many values fall in each of ten bins."""
    if not values:
        return []
    span = (high - low) or 1.0
    counts = [0] * _BINS
    for value in values:
        index = min(_BINS - 1, max(0, int((value - low) / span * _BINS)))
        counts[index] += 1
    tallest = max(counts)
    width = 100 / _BINS
    return [
        Bar(
            x=i * width,
            width=width * 0.9,
            height=100 * count / tallest,
            label=f"{low + i * span / _BINS:.2g}-{low + (i + 1) * span / _BINS:.2g}: {count}",
        )
        for i, count in enumerate(counts)
    ]


def _case_rows(results: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for row in results:
        scores = {k: v for k, v in row["scores"].items() if v is not None}
        mean = sum(scores.values()) / len(scores) if scores else None
        rows.append(
            {**row, "mean": mean, "shown_scores": {m: row["scores"].get(m) for m in metrics}}
        )
    return rows


def render_report(
    workspace: Workspace, run_id: str, *, compare_with: str | None = None, worst: int = 10
) -> str:
    run = load_run(workspace, run_id)
    results = load_results(workspace, run["id"])
    metrics = list(run["config"]["metrics"])
    comparison: Comparison | None = None
    if compare_with:
        comparison = compare_runs(workspace, compare_with, run["id"])
    ok = [r for r in results if r["status"] == "ok"]
    distributions = {
        metric: histogram([r["scores"][metric] for r in ok if r["scores"].get(metric) is not None])
        for metric in metrics
    }
    latencies = [r["result"]["latency_ms"] for r in ok if r["result"]["latency_ms"]]
    latency_bars = histogram(latencies, low=0.0, high=max(latencies)) if latencies else []
    rows = _case_rows(results, metrics)
    errors = [r for r in rows if r["status"] == "error"]
    ranked = sorted((r for r in rows if r["mean"] is not None), key=lambda r: r["mean"])
    environment = Environment(
        loader=PackageLoader("slmops.eval", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    template = environment.get_template("report.html")
    return template.render(
        run=run,
        started=dt.datetime.fromtimestamp(run["started_at"]).strftime("%Y-%m-%d %H:%M"),
        summary=run["summary"] or {},
        metrics=metrics,
        distributions=distributions,
        latency_bars=latency_bars,
        latency_max=max(latencies) if latencies else 0,
        comparison=comparison,
        worst=ranked[:worst],
        errors=errors,
    )
