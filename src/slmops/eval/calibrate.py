"""Calibrate a refusal threshold of a stack's cite step on a labelled dataset.

A threshold set by hand is a guess. Here the stack runs once over a dataset with answerable
and unanswerable cases, with the chosen check switched off (so every case records its score
and the answer the stack would give), and then each candidate threshold is applied offline:
a case whose score is below it counts as refused. For every threshold the sweep reports the
answers' quality (contains-answer and token F1 over the answerable cases, a refusal scoring
0), refusal correctness over all cases, and how many were answered; the recommended
threshold maximises the mean of contains-answer and refusal correctness (ties: the lower
threshold, which refuses less).

The checks: ``sentence`` (``min_score``: the best selected sentence's score, which decides
extractive answers and the hybrid mode's fallback to them), ``support`` (``min_support``: a
generated answer against its sources) and ``relevance`` (``min_relevance``: the question
against the best passage). Switching one check off leaves the others as they are; a
hybrid stack's fallback to extracted sentences is not replayed by the sweep (the swept
answer is the one given with the check off).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from slmops.apps.citations import Cite, SourcedAnswer
from slmops.apps.stack import Stack
from slmops.errors import ConfigError, SlmopsError
from slmops.eval.datasets import EvalCase
from slmops.eval.metrics import CaseResult, ContainsAnswer, RefusalCorrectness, TokenF1

# check -> (the cite step's option, the SourcedAnswer field holding the case's score)
CHECKS: dict[str, tuple[str, str]] = {
    "sentence": ("min_score", "sentence_score"),
    "support": ("min_support", "support"),
    "relevance": ("min_relevance", "relevance"),
}
_OFF = -1e9  # a threshold no score is below: the check never refuses


@dataclass(frozen=True)
class CalibrationCase:
    case: EvalCase
    score: float | None  # None: the check did not apply (e.g. refused earlier)
    answer: str
    refused: bool  # refused by another check, with this one off
    error: str | None = None


@dataclass(frozen=True)
class ThresholdFigures:
    threshold: float
    answered: float  # share of all cases answered
    contains_answer: float | None  # over answerable cases; a refusal scores 0
    token_f1: float | None
    refusal_correctness: float | None

    @property
    def balanced(self) -> float:
        """The figure the recommendation maximises."""
        parts = [v for v in (self.contains_answer, self.refusal_correctness) if v is not None]
        return sum(parts) / len(parts) if parts else 0.0


@dataclass(frozen=True)
class Calibration:
    check: str
    option: str
    current: float
    cases: list[CalibrationCase]
    rows: list[ThresholdFigures]

    @property
    def best(self) -> ThresholdFigures:
        return max(self.rows, key=lambda row: (round(row.balanced, 6), -row.threshold))

    @property
    def at_current(self) -> ThresholdFigures:
        # the grid always holds the current threshold (see calibration())
        return next(row for row in self.rows if row.threshold == self.current)


def cite_node(stack: Stack) -> str:
    """The name of the stack's (last) cite step; a stack without one cannot be calibrated."""
    names = [node.name for node in stack.nodes if isinstance(node.step, Cite)]
    if not names:
        raise ConfigError(
            f"stack {stack.stack_name!r} has no cite step: nothing refuses, nothing to calibrate"
        )
    return names[-1]


def with_check_off(stack: Stack, check: str) -> tuple[Stack, float]:
    """A copy of ``stack`` whose cite step never refuses on ``check``, and the threshold the
    stack has now."""
    if check not in CHECKS:
        raise ConfigError(f"unknown check {check!r}; choose one of {', '.join(CHECKS)}")
    option, _ = CHECKS[check]
    name = cite_node(stack)
    nodes = []
    current = 0.0
    for node in stack.nodes:
        if node.name == name and isinstance(node.step, Cite):
            current = float(getattr(node.step, option))
            node = replace(node, step=node.step.with_thresholds(**{option: _OFF}))
        nodes.append(node)
    opened = Stack(
        stack.name,
        manifest=stack.manifest,
        resolved=stack.resolved,
        nodes=nodes,
        input_type=stack.input_type,
        output=stack.output_node,
        settings=stack.setting_overrides,
    )
    return opened, current


async def collect(
    stack: Stack,
    check: str,
    cases: Sequence[EvalCase],
    *,
    on_case: Callable[[], None] | None = None,
) -> list[CalibrationCase]:
    """Run the stack (with ``check`` off) over the cases, one at a time."""
    _, field = CHECKS[check]
    collected = []
    for case in cases:
        try:
            output = (await stack.ainvoke(case.input)).output
        except Exception as exc:  # one bad case must not end the sweep: record it
            collected.append(CalibrationCase(case, None, "", True, f"{type(exc).__name__}: {exc}"))
        else:
            if not isinstance(output, SourcedAnswer):
                raise SlmopsError(f"stack {stack.stack_name!r} does not return a sourced answer")
            score = getattr(output, field)
            collected.append(CalibrationCase(case, score, output.answer, output.refused))
        if on_case is not None:
            on_case()
    return collected


def candidate_thresholds(cases: Sequence[CalibrationCase], steps: int = 25) -> list[float]:
    """Thresholds spread over the observed scores (quantiles), plus one below them all."""
    scores = sorted(c.score for c in cases if c.score is not None)
    if not scores:
        return []
    quantiles = np.quantile(scores, np.linspace(0, 1, steps))
    return sorted({round(scores[0] - 0.01, 2), *(round(float(q), 2) for q in quantiles)})


def sweep(cases: Sequence[CalibrationCase], thresholds: Sequence[float]) -> list[ThresholdFigures]:
    contains, f1, refusal = ContainsAnswer(), TokenF1(), RefusalCorrectness()
    usable = [c for c in cases if c.error is None]
    rows = []
    for threshold in thresholds:
        results = []
        for item in usable:
            refused = item.refused or (item.score is not None and item.score < threshold)
            results.append(
                CaseResult(
                    question=item.case.question(),
                    answer="" if refused else item.answer,
                    reference=item.case.reference,
                    alternatives=list(item.case.alternatives),
                    answerable=item.case.answerable,
                    adversarial=item.case.adversarial,
                    refused=refused,
                )
            )
        answerable = [r for r in results if r.answerable and r.reference is not None]
        rows.append(
            ThresholdFigures(
                threshold=threshold,
                answered=sum(not r.refused for r in results) / len(results) if results else 0.0,
                contains_answer=_mean([contains.score(r) or 0.0 for r in answerable]),
                token_f1=_mean([f1.score(r) or 0.0 for r in answerable]),
                refusal_correctness=_mean(
                    [s for r in results if (s := refusal.score(r)) is not None]
                ),
            )
        )
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def calibration(
    check: str, current: float, cases: list[CalibrationCase], thresholds: Sequence[float] = ()
) -> Calibration:
    if not any(c.error is None for c in cases):
        raise SlmopsError("every case failed: nothing to calibrate on")
    grid = sorted({*(thresholds or candidate_thresholds(cases)), current})
    return Calibration(check, CHECKS[check][0], current, cases, sweep(cases, grid))


_STEP_HEADER = re.compile(r"^\s*\[\[steps\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")


def apply_threshold(manifest: Path, step: str, option: str, value: float) -> None:
    """Set ``option = value`` in the ``[[steps]]`` table named ``step`` of a manifest file,
    keeping every other line (comments included); written atomically."""
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    start = end = None
    for index, line in enumerate(lines):
        if _STEP_HEADER.match(line):
            if start is not None:
                end = index
                break
            block_name = None
            for following in lines[index + 1 :]:
                if _TABLE_HEADER.match(following):
                    break
                found = re.match(r'^\s*name\s*=\s*"([^"]*)"', following)
                if found:
                    block_name = found.group(1)
                    break
            if block_name == step:
                start = index
    if start is None:
        raise ConfigError(f"{manifest}: no [[steps]] table named {step!r}")
    end = end if end is not None else len(lines)
    setting = f"{option} = {value:g}\n"
    pattern = re.compile(rf"^\s*{re.escape(option)}\s*=")
    for index in range(start, end):
        if pattern.match(lines[index]):
            lines[index] = setting
            break
    else:
        last = end
        while last > start + 1 and not lines[last - 1].strip():
            last -= 1  # before the blank lines that separate tables
        if last > 0 and not lines[last - 1].endswith("\n"):
            lines[last - 1] += "\n"
        lines.insert(last, setting)
    partial = manifest.with_suffix(".toml.partial")
    partial.write_text("".join(lines), encoding="utf-8")
    partial.replace(manifest)
