"""Regression gates: ``faithfulness>=0.7``, ``p95_latency_ms<=2000``, or on the cases of one
tag, ``token_f1[squad]>=0.3``, checked on a run's summary, each failure said with its margin,
so a CI log shows what broke and by how much."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slmops.errors import SlmopsError

_GATE = re.compile(
    r"^\s*([A-Za-z0-9_@.]+(?:\[[A-Za-z0-9_.:-]+\])?)\s*(>=|<=|>|<|==)\s*(-?[0-9]*\.?[0-9]+)\s*$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


class GateError(SlmopsError):
    """A gate is malformed or names a figure the run does not have."""


@dataclass(frozen=True)
class Gate:
    figure: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.figure}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if match is None:
        raise GateError(
            f"gate {text!r} is not FIGURE OP NUMBER (OP one of >=, <=, >, <, ==), "
            "e.g. faithfulness>=0.7"
        )
    threshold = float(match.group(3))
    if not math.isfinite(threshold):  # a few hundred digits make float() inf
        raise GateError(f"gate {text!r}: threshold {match.group(3)[:20]}... is too large")
    return Gate(match.group(1), match.group(2), threshold)


def figures(summary: dict[str, Any]) -> dict[str, float]:
    """Every gateable figure of a run summary: metric means and the cost/error figures."""
    found = {
        key: float(value)
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    slices = {"": summary.get("metrics", {})}
    slices.update({f"[{tag}]": means for tag, means in summary.get("by_tag", {}).items()})
    for suffix, metrics in slices.items():
        for key, metric in metrics.items():
            if metric.get("mean") is not None:
                found[key + suffix] = float(metric["mean"])
                found.setdefault(key.split("@")[0] + suffix, float(metric["mean"]))
    return found


SUMMARY_FIGURES = (
    "cases",
    "errors",
    "error_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "mean_prompt_tokens",
    "mean_completion_tokens",
)


def check_names(gates: list[Gate], metric_keys: list[str]) -> None:
    """Refuse, before a run starts, a gate on a figure the run will not have."""
    known = set(SUMMARY_FIGURES) | set(metric_keys) | {k.split("@")[0] for k in metric_keys}
    for gate in gates:
        if gate.figure.partition("[")[0] not in known:  # a tag is known once the run is done
            raise GateError(
                f"gate {gate}: the run will have no figure {gate.figure!r}; figures: "
                + ", ".join(sorted(known))
            )


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float
    passed: bool

    def describe(self) -> str:
        if self.passed:
            return f"gate {self.gate} passed: {self.value:.4g}"
        gap = abs(self.value - self.gate.threshold)
        side = "below" if self.gate.op in (">=", ">") else "above"
        if self.gate.op == "==":
            side = "away from"
        return (
            f"gate {self.gate} FAILED: {self.value:.4g} is {gap:.4g} {side} {self.gate.threshold:g}"
        )


def check_gates(gates: list[Gate], summary: dict[str, Any]) -> list[GateResult]:
    available = figures(summary)
    results = []
    for gate in gates:
        if gate.figure not in available:
            raise GateError(
                f"gate {gate}: the run has no figure {gate.figure!r}; figures: "
                + ", ".join(sorted(available))
            )
        value = available[gate.figure]
        results.append(GateResult(gate, value, _OPERATORS[gate.op](value, gate.threshold)))
    return results
