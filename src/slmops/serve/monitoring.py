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


class FigureLookup:
    """Window and drift figures of stacks by name, each computed once: the gauges and every
    alert rule on the same window share one query. Drift figures (seconds of embedding) are
    kept ``drift_max_age_s`` in ``drift_cache``, which may outlive the lookup."""

    def __init__(
        self,
        workspace: Workspace,
        embed: Embed | None,
        *,
        drift_cache: dict[tuple[str, float], tuple[float, dict[str, float | None]]] | None = None,
        drift_max_age_s: float = 0.0,
    ) -> None:
        self.workspace = workspace
        self.embed = embed
        self.drift_cache = {} if drift_cache is None else drift_cache
        self.drift_max_age_s = drift_max_age_s
        self._windows: dict[tuple[str, float, float], dict[str, float | None]] = {}
        self._drifts: dict[tuple[str, float, float], dict[str, float | None]] = {}

    def window(self, stack: str, window_s: float, now: float) -> dict[str, float | None]:
        key = (stack, window_s, now)
        if key not in self._windows:
            self._windows[key] = window_figures(self.workspace.engine, stack, now - window_s, now)
        return self._windows[key]

    def drift(self, stack: str, window_s: float, now: float) -> dict[str, float | None]:
        """The window against the one before it."""
        if (stack, window_s, now) in self._drifts:
            return self._drifts[(stack, window_s, now)]
        cached = self.drift_cache.get((stack, window_s))
        if cached is not None and now - cached[0] < self.drift_max_age_s:
            return cached[1]
        figures = drift_report(
            self.workspace,
            stack,
            (now - window_s, now),
            (now - 2 * window_s, now - window_s),
            embed=self.embed,
        ).figures()
        self.drift_cache[(stack, window_s)] = (now, figures)
        self._drifts[(stack, window_s, now)] = figures
        return figures

    def __call__(self, stack: str, figure: str, window_s: float, now: float) -> float | None:
        """The lookup alert rules use (see :func:`slmops.monitor.alerts.evaluate_rules`)."""
        if figure in DRIFT_FIGURES:
            return self.drift(stack, window_s, now).get(figure)
        return self.window(stack, window_s, now).get(figure)


def figure_of(workspace: Workspace, embed: Embed | None) -> FigureLookup:
    """A lookup of any window or drift figure by name, for one evaluation of the rules."""
    return FigureLookup(workspace, embed)


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
    _drift_cache: dict[tuple[str, float], tuple[float, dict[str, float | None]]] = field(
        default_factory=dict
    )

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
        """Recompute the gauges of every monitored stack and evaluate alert rules, from one
        lookup: a rule on the gauges' window reuses their figures, and drift (embedding)
        is recomputed at most every drift_interval_s, only while no request generates."""
        now = time.time() if now is None else now
        window = self.config.window_s
        lookup = FigureLookup(
            self.workspace,
            self.embed,
            drift_cache=self._drift_cache,
            drift_max_age_s=self.config.drift_interval_s,
        )
        drift_now = self.config.drift and (self.idle is None or self.idle())
        for stack in self.stacks:
            self._show(stack, lookup.window(stack, window, now))
            if drift_now:
                self._show(stack, lookup.drift(stack, window, now))
        evaluate_rules(self.workspace.engine, lookup, now=now, notifier=self.notifier)
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
