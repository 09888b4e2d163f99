"""``/eval`` (runs, newest first, with a form to compare two), ``/eval/runs/{id}`` (one run:
config, versions, figures overall and by tag, the report's distributions, every case worst
first, each linked to its trace) and ``/eval/compare?a=RUN&b=RUN`` (per-metric change with
bootstrap intervals, flipped cases, what changed). Read through the library calls the
``slmops eval`` commands use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from slmops.errors import ConfigError, SlmopsError
from slmops.eval.compare import PASS, compare_runs
from slmops.eval.datasets import Datasets, DatasetVersion
from slmops.eval.report import Bar, histogram
from slmops.eval.runner import list_runs, load_results, load_run, run_state, summarize

if TYPE_CHECKING:
    from slmops.ui.app import Console

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
MAX_PAGE = 1000  # each page reads the runs before it: deeper is no page anyone reads
CASES_SHOWN = 200
RUN_ID = re.compile(r"[0-9a-f]{6,32}")
FIGURES = ("p50_latency_ms", "p95_latency_ms", "mean_prompt_tokens", "mean_completion_tokens")
WHOLE_CASE_SORTS = {"mean": "mean of its scores", "latency": "slowest first"}
VERSION_GROUPS = (
    ("corpora", "corpus"),
    ("prompts", "prompt"),
    ("models", "model"),
    ("model_digests", "model weights"),
)


@dataclass(frozen=True)
class RunRow:
    """One run of the list: its record and the figures the list shows."""

    run: dict[str, Any]
    means: dict[str, float | None]
    cases: int | None
    errors: int | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class CaseRow:
    """One evaluated case of a run, with the scores of the run's metrics."""

    case_id: str
    trace_id: str | None
    status: str
    result: dict[str, Any]
    scores: dict[str, float | None]

    @property
    def mean(self) -> float | None:
        present = [score for score in self.scores.values() if score is not None]
        return sum(present) / len(present) if present else None

    def key(self, sort: str) -> float | None:
        if sort == "mean":
            return self.mean
        if sort == "latency":  # worst is slowest
            latency = self.result.get("latency_ms")
            return None if latency is None else -float(latency)
        return self.scores.get(sort)


@dataclass(frozen=True)
class TagRow:
    metric: str
    cells: list[dict[str, Any]]  # {"mean": float | None, "cases": int} per tag


def metric_columns(runs: list[dict[str, Any]]) -> list[str]:
    """The metrics of the runs, in the order they were first configured."""
    return list(dict.fromkeys(key for run in runs for key in run["config"].get("metrics", [])))


def run_row(run: dict[str, Any]) -> RunRow:
    summary = run["summary"] or {}
    metrics = summary.get("metrics", {})
    return RunRow(
        run=run,
        means={key: value.get("mean") for key, value in metrics.items()},
        cases=summary.get("cases"),
        errors=summary.get("errors"),
        p50_ms=summary.get("p50_latency_ms"),
        p95_ms=summary.get("p95_latency_ms"),
    )


def case_rows(results: list[dict[str, Any]], metrics: list[str]) -> list[CaseRow]:
    return [
        CaseRow(
            case_id=row["case_id"],
            trace_id=row["trace_id"],
            status=row["status"],
            result=row["result"],
            scores={metric: row["scores"].get(metric) for metric in metrics},
        )
        for row in results
    ]


def worst_first(rows: list[CaseRow], sort: str) -> list[CaseRow]:
    """Errors first, then the lowest score by ``sort`` (ties by case id), then the cases the
    score does not apply to."""

    def order(row: CaseRow) -> tuple[int, float, str]:
        if row.status == "error":
            return (0, 0.0, row.case_id)
        value = row.key(sort)
        return (1, value, row.case_id) if value is not None else (2, 0.0, row.case_id)

    return sorted(rows, key=order)


def tag_rows(by_tag: dict[str, dict[str, Any]]) -> list[TagRow]:
    """Each metric's mean per tag, as ``slmops eval run`` prints them (metrics no tag's
    cases scored are left out)."""
    if not by_tag:
        return []
    metrics = next(iter(by_tag.values()))
    rows = []
    for metric in metrics:
        cells = [by_tag[tag].get(metric, {"mean": None, "cases": 0}) for tag in by_tag]
        if any(cell["mean"] is not None for cell in cells):
            rows.append(TagRow(metric, cells))
    return rows


def distributions(
    rows: list[CaseRow], metrics: list[str]
) -> tuple[dict[str, list[Bar]], list[Bar], float]:
    """The report's histograms: each metric's scores, and the latencies (with their top)."""
    ok = [row for row in rows if row.status == "ok"]
    bars = {
        metric: histogram([s for row in ok if (s := row.scores.get(metric)) is not None])
        for metric in metrics
    }
    latencies = [float(row.result["latency_ms"]) for row in ok if row.result.get("latency_ms")]
    top = max(latencies, default=0.0)
    return bars, (histogram(latencies, high=top) if latencies else []), top


def dataset_version(console: Console, ref: str) -> DatasetVersion | None:
    """The dataset version a run used (None when it is gone from the workspace)."""
    try:
        return Datasets(console.workspace).resolve(ref)
    except SlmopsError:
        return None


def version_table(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, in run A, in run B, differs) for every versioned thing of either run."""
    rows = [("stack version", str(a.get("stack", "")), str(b.get("stack", "")), False)]
    for group, kind in VERSION_GROUPS:
        before, after = a.get(group) or {}, b.get(group) or {}
        for alias in sorted(before.keys() | after.keys()):
            old, new = str(before.get(alias, "(none)")), str(after.get(alias, "(none)"))
            rows.append((f"{kind} {alias}", old, new, False))
    lock = ("on" if a.get("locked") else "off", "on" if b.get("locked") else "off")
    rows.append(("lock", *lock, False))
    return [(what, old, new, old != new) for what, old, new, _ in rows]


def _run_id(name: str, value: str) -> str:
    value = value.strip().lower()
    if not value:
        raise ConfigError(f"{name}: choose a run (its id, or 6+ characters of it)")
    if not RUN_ID.fullmatch(value):
        raise ConfigError(f"{name}: {value[:40]!r} is not a run id (6 to 32 hex characters)")
    return value


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    workspace = console.workspace

    @routes.get("/eval", response_class=HTMLResponse)
    def run_list(request: Request, page: int = 1, per_page: int = PAGE_SIZE) -> HTMLResponse:
        if not 1 <= page <= MAX_PAGE:
            raise ConfigError(f"page: {page} is not a page; pages are 1 to {MAX_PAGE}")
        if not 1 <= per_page <= MAX_PAGE_SIZE:
            raise ConfigError(f"per_page: {per_page} is not between 1 and {MAX_PAGE_SIZE}")
        skip = (page - 1) * per_page
        runs = list_runs(workspace, skip + per_page + 1)  # one more: is there a next page?
        # a run whose process died shows as crashed, not running (as in `eval runs`)
        shown = [{**run, "status": run_state(run)} for run in runs[skip : skip + per_page]]
        if page > 1 and not shown:
            raise ConfigError(f"page: there is no page {page} of eval runs")
        complete = [run["id"] for run in shown if run["status"] == "complete"]
        picks = complete if len(complete) >= 2 else [run["id"] for run in shown]
        return console.render(
            request,
            "eval_runs.html",
            title="Eval runs",
            rows=[run_row(run) for run in shown],
            pick_b=picks[0] if picks else "",
            pick_a=picks[1] if len(picks) > 1 else "",
            metrics=metric_columns(shown),
            page=page,
            per_page=per_page,
            more=len(runs) > skip + per_page,
        )

    @routes.get("/eval/runs/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request, run_id: str, sort: str = "mean", limit: int = CASES_SHOWN
    ) -> HTMLResponse:
        run = load_run(workspace, run_id)  # 404 when unknown
        metrics = list(run["config"].get("metrics", []))
        sorts = {**WHOLE_CASE_SORTS, **{metric: metric for metric in metrics}}
        if sort not in sorts:
            raise ConfigError(f"sort: {sort[:40]!r} is not one of {', '.join(sorts)}")
        if limit < 1:
            raise ConfigError(f"limit: {limit} cases is not 1 or more")
        results = load_results(workspace, run["id"])
        summary = run["summary"] or (summarize(results, metrics) if results else {})
        rows = case_rows(results, metrics)
        bars, latency_bars, latency_top = distributions(rows, metrics)
        others = [r for r in list_runs(workspace, 50) if r["id"] != run["id"]]
        ranked = worst_first(rows, sort)
        return console.render(
            request,
            "eval_run.html",
            title=f"Eval {run['id'][:12]} · {run['stack']}",
            run=run,
            partial=not run["summary"],
            summary=summary,
            metrics=metrics,
            figures=[(key, summary[key]) for key in FIGURES if summary.get(key) is not None],
            tags=list((summary.get("by_tag") or {}).keys()),
            tag_rows=tag_rows(summary.get("by_tag") or {}),
            dataset=dataset_version(console, run["dataset"]),
            version_groups=VERSION_GROUPS,
            distributions=bars,
            latency_bars=latency_bars,
            latency_top=latency_top,
            sort=sort,
            sorts=sorts,
            cases=ranked[:limit],
            hidden=max(0, len(ranked) - limit),
            others=others,
        )

    @routes.get("/eval/compare", response_class=HTMLResponse)
    def compare_page(request: Request, a: str = "", b: str = "") -> HTMLResponse:
        first, second = _run_id("a", a), _run_id("b", b)
        result = compare_runs(workspace, first, second)  # 404 for an unknown run
        run_a, run_b = result.run_a, result.run_b
        if run_a["id"] == run_b["id"]:
            raise ConfigError("b: choose a different run than a to compare with")
        cases_a = {row["case_id"]: row for row in load_results(workspace, run_a["id"])}
        cases_b = {row["case_id"]: row for row in load_results(workspace, run_b["id"])}
        return console.render(
            request,
            "eval_compare.html",
            title=f"Compare {run_a['id'][:12]} → {run_b['id'][:12]}",
            result=result,
            a=run_a,
            b=run_b,
            cases_a=cases_a,
            cases_b=cases_b,
            versions=version_table(run_a["versions"], run_b["versions"]),
            passing=PASS,
        )

    return routes
