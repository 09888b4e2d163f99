"""Comparing two runs on the same cases: per-metric deltas with paired bootstrap confidence
intervals, and the cases whose verdict flipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slmops.errors import SlmopsError
from slmops.eval.metrics import percentile
from slmops.eval.runner import load_results, load_run
from slmops.store.workspace import Workspace

PASS = 0.5
"""A case passes a metric at a score of at least this (binary metrics are 0 or 1)."""


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    a: float
    b: float
    cases: int
    low: float
    high: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def significant(self) -> bool:
        """The 95% interval excludes no change."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Flip:
    case_id: str
    question: str
    metric: str
    a: float
    b: float


@dataclass(frozen=True)
class Comparison:
    run_a: dict[str, Any]
    run_b: dict[str, Any]
    shared_cases: int
    deltas: list[MetricDelta]
    flips: list[Flip]
    latency: dict[str, tuple[float | None, float | None]]
    changes: list[str]  # what differs between the runs' stacks: "prompt answer: x@1 -> x@2"


_KINDS = {
    "corpora": "corpus",
    "prompts": "prompt",
    "models": "model",
    "model_digests": "model weights",
}


def version_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The corpus, prompt and model versions (and lock state) that differ from run A's
    record to run B's: what the comparison is a comparison of."""
    changes = []
    if a.get("stack") != b.get("stack"):
        changes.append(f"stack version (manifest or code): {a.get('stack')} -> {b.get('stack')}")
    for group, kind in _KINDS.items():
        before, after = a.get(group, {}), b.get(group, {})
        for alias in sorted(before.keys() | after.keys()):
            old, new = before.get(alias, "(none)"), after.get(alias, "(none)")
            if old != new:
                changes.append(f"{kind} {alias}: {old} -> {new}")
    if bool(a.get("locked")) != bool(b.get("locked")):
        changes.append("lock: on -> off" if a.get("locked") else "lock: off -> on")
    return changes


def bootstrap_interval(
    differences: np.ndarray, *, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the mean of paired differences, by resampling cases."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(samples, len(differences)))
    means = differences[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare_runs(workspace: Workspace, run_a: str, run_b: str) -> Comparison:
    first, second = load_run(workspace, run_a), load_run(workspace, run_b)
    rows_a = {r["case_id"]: r for r in load_results(workspace, first["id"]) if r["status"] == "ok"}
    rows_b = {r["case_id"]: r for r in load_results(workspace, second["id"]) if r["status"] == "ok"}
    shared = sorted(rows_a.keys() & rows_b.keys())
    if not shared:
        raise SlmopsError(
            f"runs {first['id'][:12]} and {second['id'][:12]} share no successful case to compare"
        )
    metrics = [m for m in first["config"]["metrics"] if m in second["config"]["metrics"]]
    deltas: list[MetricDelta] = []
    flips: list[Flip] = []
    for metric in metrics:
        pairs = [
            (case, rows_a[case]["scores"].get(metric), rows_b[case]["scores"].get(metric))
            for case in shared
        ]
        pairs = [(c, a, b) for c, a, b in pairs if a is not None and b is not None]
        if not pairs:
            continue
        a_scores = np.array([a for _, a, _ in pairs])
        b_scores = np.array([b for _, _, b in pairs])
        low, high = bootstrap_interval(b_scores - a_scores)
        deltas.append(
            MetricDelta(
                metric, float(a_scores.mean()), float(b_scores.mean()), len(pairs), low, high
            )
        )
        flips += [
            Flip(case, rows_b[case]["result"]["question"], metric, a, b)
            for case, a, b in pairs
            if (a >= PASS) != (b >= PASS)
        ]

    def latencies(rows: dict[str, dict[str, Any]]) -> list[float]:
        return [rows[c]["result"]["latency_ms"] for c in shared if rows[c]["result"]["latency_ms"]]

    latency = {
        f"p{q}_latency_ms": (percentile(latencies(rows_a), q), percentile(latencies(rows_b), q))
        for q in (50, 95)
    }
    flips.sort(key=lambda f: (f.b - f.a, f.case_id))  # regressions first
    changes = version_changes(first["versions"], second["versions"])
    if first["stack"] != second["stack"]:
        changes.insert(0, f"stack: {first['stack']} -> {second['stack']}")
    return Comparison(first, second, len(shared), deltas, flips, latency, changes)
