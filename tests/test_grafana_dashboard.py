"""The Grafana dashboard in deploy/grafana/ is importable and only queries metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "slmops-monitor.json"
SERVER_METRICS = ROOT / "src" / "slmops" / "serve" / "metrics.py"

MONITOR_METRICS = {
    "slmops_monitor_figure": "gauge",
    "slmops_monitor_traces_total": "counter",
    "slmops_alerts_firing": "gauge",
}
"""Exposed names of the monitoring metrics the dashboard reads. src/slmops/serve/metrics.py
must define them (``slmops_monitor_traces`` as a Counter, so it is exposed with ``_total``);
each is also checked against that file's source below."""

MONITOR_FIGURES = {
    "requests", "error_rate", "refusal_rate", "p50_latency_ms", "p95_latency_ms",
    "mean_prompt_tokens", "mean_completion_tokens", "low_relevance_share", "feedback_count",
    "feedback_positive_rate", "scored", "faithfulness", "citation_support",
    "retrieval_relevance", "answer_tokens", "query_embedding_mmd", "output_length_ks",
    "refusal_rate_shift", "low_relevance_shift",
}  # fmt: skip
"""Values of the ``figure`` label of ``slmops_monitor_figure``."""

TRACE_OUTCOMES = {"offered", "sampled", "dropped", "scored", "failed"}

_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
_METRIC_NAME = re.compile(r"\bslmops_[a-zA-Z0-9_:]*")
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("", "_count", "_sum", "_created"),
}
_KIND_OF = {"gauge": "Gauge", "counter": "Counter"}


def defined_metrics(source: str) -> dict[str, str]:
    """Exposed sample name -> metric kind, for every metric constructed in ``source``."""
    exposed: dict[str, str] = {}
    for kind, name in _DEFINITION.findall(source):
        base = name.removesuffix("_total") if kind == "Counter" else name
        for suffix in _SUFFIXES[kind]:
            exposed[base + suffix] = kind
    return exposed


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def metric_names(expr: str) -> set[str]:
    """The slmops metric names an expression reads (label values are in quotes, so strip
    string literals first: ``figure="requests"`` must not count as a name)."""
    return set(_METRIC_NAME.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])
    ]


def test_dashboard_is_an_importable_document(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    inputs = {item["name"]: item for item in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"


def test_panel_ids_are_unique_and_every_panel_is_placed(dashboard: dict[str, Any]) -> None:
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_the_templated_datasource(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']!r} has no queries"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_templating_has_datasource_and_stack_variables(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    stack = variables["stack"]
    assert stack["type"] == "query"
    assert stack["datasource"]["uid"] == "${datasource}"
    assert stack["definition"] == "label_values(slmops_monitor_figure, stack)"
    for variable in variables.values():
        if variable["type"] == "query":
            assert metric_names(variable["definition"]) <= known_metric_names()


def test_queries_are_balanced(queries: list[str]) -> None:
    for expr in queries:
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        for opening, closing in ("()", "{}", "[]"):
            depth = 0
            for char in text:
                depth += (char == opening) - (char == closing)
                assert depth >= 0, expr
            assert depth == 0, expr


def known_metric_names() -> set[str]:
    return set(defined_metrics(SERVER_METRICS.read_text(encoding="utf-8"))) | set(MONITOR_METRICS)


def test_every_metric_a_query_reads_is_exposed(queries: list[str]) -> None:
    known = known_metric_names()
    used = set().union(*(metric_names(expr) for expr in queries))
    assert used, "no metric names found in the queries"
    assert used <= known, f"not exposed by serve/metrics.py: {sorted(used - known)}"


def test_serve_metrics_defines_the_monitoring_metrics() -> None:
    defined = defined_metrics(SERVER_METRICS.read_text(encoding="utf-8"))
    for name, kind in MONITOR_METRICS.items():
        assert defined.get(name) == _KIND_OF[kind], (
            f"serve/metrics.py must define {name} as a {_KIND_OF[kind]}"
        )


def test_server_metrics_are_all_on_the_dashboard(queries: list[str]) -> None:
    used = set().union(*(metric_names(expr) for expr in queries))
    source = SERVER_METRICS.read_text(encoding="utf-8")
    missing = [
        name
        for kind, name in _DEFINITION.findall(source)
        if not set(defined_metrics(f'{kind}("{name}"')) & used
    ]
    assert not missing, f"metrics in serve/metrics.py with no panel: {missing}"


def test_figures_and_outcomes_are_the_known_ones(queries: list[str]) -> None:
    figures = {
        figure
        for expr in queries
        for figure in re.findall(r'slmops_monitor_figure\{[^}]*figure="([^"]+)"', expr)
    }
    assert figures == MONITOR_FIGURES
    outcomes = {
        outcome
        for expr in queries
        for outcome in re.findall(r'slmops_monitor_traces_total\{[^}]*outcome="([^"]+)"', expr)
    }
    assert outcomes <= TRACE_OUTCOMES


def test_metric_parsing_accounts_for_client_suffixes() -> None:
    source = (
        'Counter("a_requests", "", registry=r)\nCounter("b_total", "")\n'
        'Histogram(\n    "c_seconds", "")\nGauge("d", "")'
    )
    exposed = defined_metrics(source)
    assert {"a_requests_total", "b_total", "c_seconds_bucket", "c_seconds_sum", "d"} <= set(exposed)
    assert "a_requests" not in exposed and "c_seconds" not in exposed
    assert metric_names('sum(rate(slmops_x_total{figure="slmops_y"}[5m]))') == {"slmops_x_total"}
