"""The server's monitor: online scoring of a share of stack answers, and a background loop
that refreshes the monitored figures (Prometheus gauges) and evaluates alert rules.

Nothing here runs on the request path except :meth:`ServerMonitor.offer` (a coin toss and a
queue put); figures, drift and alerts are computed in worker threads every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slmops.core.threads import run_blocking
from slmops.monitor.alerts import Notifier, evaluate_rules, list_rules
from slmops.monitor.figures import window_figures
from slmops.monitor.online import OnlineScorer
from slmops.monitor.shifts import DRIFT_FIGURES, drift_report
from slmops.serve.metrics import ServerMetrics
from slmops.store.workspace import Workspace

log = logging.getLogger("slmops.monitor")


@dataclass
class MonitorConfig:
    share: float = 0.1  # of stack answers scored online
    interval_s: float = 30.0  # between figure refreshes and alert evaluations
    window_s: float = 900.0  # the window the gauges show
    drift: bool = True  # refresh drift gauges (window against the one before it)
    drift_interval_s: float = 300.0  # drift embeds questions: less often than the figures


Embed = Callable[[Sequence[str]], Any]


def figure_of(
    workspace: Workspace, embed: Embed | None
) -> Callable[[str, str, float, float], float | None]:
    """The figure lookup alert rules use: any window figure or drift figure by name. Each
    (stack, window) is computed once per lookup object, so create one per evaluation."""
    windows: dict[tuple[str, float, float], dict[str, float | None]] = {}
    drifts: dict[tuple[str, float, float], dict[str, float | None]] = {}

    def lookup(stack: str, figure: str, window_s: float, now: float) -> float | None:
        key = (stack, window_s, now)
        if figure in DRIFT_FIGURES:
            if key not in drifts:
                drifts[key] = drift_report(
                    workspace,
                    stack,
                    (now - window_s, now),
                    (now - 2 * window_s, now - window_s),
                    embed=embed,
                ).figures()
            return drifts[key].get(figure)
        if key not in windows:
            windows[key] = window_figures(workspace.engine, stack, now - window_s, now)
        return windows[key].get(figure)

    return lookup


@dataclass
class ServerMonitor:
    workspace: Workspace
    stacks: list[str]  # stack names (as traces name them)
    metrics: ServerMetrics
    config: MonitorConfig = field(default_factory=MonitorConfig)
    embed: Embed | None = None
    idle: Callable[[], bool] | None = None  # no request generating: background work may run
    scorer: OnlineScorer = field(init=False)
    _counted: dict[str, int] = field(default_factory=dict)
    _drift_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.scorer = OnlineScorer(
            self.workspace, share=self.config.share, embed=self.embed, idle=self.idle
        )
        self.notifier = Notifier()

    def offer(self, trace_id: str) -> None:
        self.scorer.offer(trace_id)

    def count_scorer(self) -> None:
        """Move the scorer's counts into the Prometheus counters (by their increase)."""
        for outcome in ("offered", "sampled", "dropped", "scored", "failed"):
            value = int(getattr(self.scorer, outcome))
            increase = value - self._counted.get(outcome, 0)
            if increase > 0:
                self.metrics.monitor_traces.labels(outcome).inc(increase)
            self._counted[outcome] = value

    def _show(self, stack: str, figures: dict[str, float | None]) -> None:
        for name, value in figures.items():
            if value is not None:
                self.metrics.monitor_figure.labels(stack, name).set(value)
            else:  # no data now: no gauge, rather than the last value forever
                with contextlib.suppress(KeyError):
                    self.metrics.monitor_figure.remove(stack, name)

    def refresh(self, now: float | None = None) -> None:
        """Recompute the gauges of every monitored stack (drift every drift_interval_s)
        and evaluate alert rules."""
        now = time.time() if now is None else now
        window = self.config.window_s
        redrift = (
            self.config.drift
            and now - self._drift_at >= self.config.drift_interval_s
            and (self.idle is None or self.idle())  # seconds of embedding: only when free
        )
        for stack in self.stacks:
            self._show(stack, window_figures(self.workspace.engine, stack, now - window, now))
            if redrift:
                report = drift_report(
                    self.workspace,
                    stack,
                    (now - window, now),
                    (now - 2 * window, now - window),
                    embed=self.embed,
                )
                self._show(stack, report.figures())
        if redrift:
            self._drift_at = now
        evaluate_rules(
            self.workspace.engine,
            figure_of(self.workspace, self.embed),
            now=now,
            notifier=self.notifier,
        )
        firing: dict[str, int] = dict.fromkeys(self.stacks, 0)
        for rule in list_rules(self.workspace.engine):
            firing[rule["stack"]] = firing.get(rule["stack"], 0) + (rule["state"] == "firing")
        for stack, count in firing.items():
            self.metrics.alerts_firing.labels(stack).set(count)

    def start(self) -> None:
        self.scorer.start()

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; a failure is logged, never fatal."""
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                await run_blocking(self.refresh)
            except Exception as exc:
                log.warning("monitor refresh failed: %s", exc)

    def stop(self) -> None:
        self.scorer.stop()
