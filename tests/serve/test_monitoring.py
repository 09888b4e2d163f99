"""The server's monitor refresh: one lookup serves the gauges and the alert rules, and drift
(seconds of embedding) is recomputed at most every drift_interval_s."""

from __future__ import annotations

from typing import Any

import pytest

from slmops.monitor.alerts import add_rule
from slmops.serve import monitoring
from slmops.serve.metrics import ServerMetrics
from slmops.serve.monitoring import MonitorConfig, ServerMonitor
from slmops.store import Workspace
from tests.monitor.traces import make_trace

T0 = 1_700_000_000.0
KNOWN = ["refusal_rate", "requests", "output_length_ks"]


def test_gauges_and_rules_share_figures_and_drift_is_kept_for_its_interval(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_trace(workspace.engine, started_at=T0 - 60)
    add_rule(workspace.engine, "handbook-rag", "refusal_rate > 0.5 over 15m", [], KNOWN)
    add_rule(workspace.engine, "handbook-rag", "output_length_ks > 0.2 over 15m", [], KNOWN)
    calls = {"window": 0, "drift": 0}
    real_window, real_drift = monitoring.window_figures, monitoring.drift_report

    def counted_window(*args: Any, **kwargs: Any) -> Any:
        calls["window"] += 1
        return real_window(*args, **kwargs)

    def counted_drift(*args: Any, **kwargs: Any) -> Any:
        calls["drift"] += 1
        return real_drift(*args, **kwargs)

    monkeypatch.setattr(monitoring, "window_figures", counted_window)
    monkeypatch.setattr(monitoring, "drift_report", counted_drift)
    monitor = ServerMonitor(
        workspace,
        ["handbook-rag"],
        ServerMetrics(),
        MonitorConfig(window_s=900, drift_interval_s=300),
    )
    monitor.refresh(now=T0)
    assert calls == {"window": 1, "drift": 1}  # the rules reused the gauges' figures
    monitor.refresh(now=T0 + 30)
    assert calls == {"window": 2, "drift": 1}  # drift is kept for 300 s
    monitor.refresh(now=T0 + 330)
    assert calls == {"window": 3, "drift": 2}
    rendered = monitor.metrics.render().decode()
    assert 'slmops_monitor_figure{figure="requests",stack="handbook-rag"} 1.0' in rendered
