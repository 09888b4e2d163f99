"""Rated production traffic as data: traces with feedback become a versioned evaluation
dataset (a reviewer's correction as the reference) or choose the traces a training set is
made of (a correction replacing the answer the model gave).

Where a trace has several pieces of feedback the newest score and the newest correction
win, a reviewer's over a user's; labels are pooled. Each case and example keeps its trace id,
so a dataset version leads back to the requests it came from.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from slmops.eval.datasets import EvalCase
from slmops.monitor.feedback import FeedbackError, feedback_by_trace
from slmops.monitor.records import TraceRecord, load_records

UNANSWERABLE_LABELS = frozenset({"unanswerable", "out-of-scope", "off-topic"})
"""A reviewer label saying the question has no answer in the corpus: the case then expects a
refusal (``answerable: false``)."""


@dataclass
class Verdict:
    """What the feedback on one trace adds up to."""

    score: float | None = None
    correction: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    feedback_ids: list[int] = field(default_factory=list)


def verdict_of(rows: Sequence[dict[str, Any]]) -> Verdict:
    """Pool a trace's feedback rows (oldest first): reviewer rows are applied after user rows
    so they win; within a source the newest wins."""
    verdict = Verdict()
    for row in sorted(rows, key=lambda r: (r["source"] == "reviewer", r["created_at"])):
        verdict.feedback_ids.append(int(row["id"]))
        if row["score"] is not None:
            verdict.score = float(row["score"])
        if row["correction"]:
            verdict.correction = row["correction"]
        verdict.labels += [label for label in row["labels"] or [] if label not in verdict.labels]
        if row["comment"]:
            verdict.comments.append(row["comment"])
    return verdict


@dataclass
class RatedTraces:
    """The traces chosen by their feedback, what was left out and why."""

    items: list[tuple[TraceRecord, Verdict]]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def rated_traces(
    engine: Engine,
    stack: str,
    kinds: Collection[str],
    *,
    with_corrections: bool = False,
    limit: int | None = None,
) -> RatedTraces:
    """Traces of ``stack`` with feedback of these kinds (see feedback.kind_condition),
    oldest first; with ``with_corrections`` only those someone corrected."""
    grouped = feedback_by_trace(engine, stack, kinds)
    chosen = RatedTraces(items=[])
    records = {r.trace_id: r for r in load_records(engine, list(grouped))}
    for trace_id, rows in grouped.items():
        record = records.get(trace_id)
        if record is None:
            chosen.skip("trace deleted (retention)")
            continue
        if record.shadow_of:
            chosen.skip("a shadow run")
            continue
        verdict = verdict_of(rows)
        if with_corrections and not verdict.correction:
            chosen.skip("no correction")
            continue
        chosen.items.append((record, verdict))
    chosen.items.sort(key=lambda item: item[0].started_at)
    if limit is not None:
        chosen.items = chosen.items[:limit]
    return chosen


def case_of(record: TraceRecord, verdict: Verdict) -> EvalCase:
    """An evaluation case from a rated trace: its input, the correction (or an answer rated
    good) as the reference, labels as tags, the trace and its retrieved chunks as metadata."""
    unanswerable = bool(UNANSWERABLE_LABELS & set(verdict.labels))
    if unanswerable:
        reference = None
    elif verdict.correction:
        reference = verdict.correction
    elif verdict.score is not None and verdict.score >= 0.5 and not record.refused:
        reference = record.answer
    else:
        reference = None
    rating = (
        "unrated" if verdict.score is None else "positive" if verdict.score >= 0.5 else "negative"
    )
    tags = [f"feedback:{rating}", *(["corrected"] if verdict.correction else []), *verdict.labels]
    stack_input = record.input if isinstance(record.input, str | dict) else record.question
    return EvalCase(
        id=f"trace-{record.trace_id[:16]}",
        input=stack_input,
        reference=reference,
        answerable=not unanswerable,
        tags=list(dict.fromkeys(tags)),
        metadata={
            "trace_id": record.trace_id,
            "retrieved_ids": record.retrieved_ids,
            "answer_given": record.answer,
            "refused": record.refused,
            "feedback_ids": verdict.feedback_ids,
            "comments": verdict.comments,
        },
    )


def cases_from_traces(
    engine: Engine,
    stack: str,
    kinds: Collection[str],
    *,
    with_corrections: bool = False,
    limit: int | None = None,
) -> tuple[list[EvalCase], RatedTraces]:
    """Evaluation cases from rated traces (see :func:`case_of`)."""
    chosen = rated_traces(engine, stack, kinds, with_corrections=with_corrections, limit=limit)
    if not chosen.items:
        reasons = "; ".join(f"{n} {why}" for why, n in chosen.skipped.items())
        raise FeedbackError(
            f"no traces of {stack!r} with {'/'.join(kinds)} feedback"
            + (f" ({reasons})" if reasons else "")
            + "; rate answers with POST /v1/feedback, 'slmops feedback add' or 'slmops review'"
        )
    return [case_of(record, verdict) for record, verdict in chosen.items], chosen


def training_choice(
    engine: Engine, stack: str, kinds: Collection[str]
) -> tuple[set[str], dict[str, str]]:
    """For training sets: the trace ids to use and the corrected replies that replace the
    model's answer. A trace rated bad without a correction is never trained on, whatever
    ``kinds`` asked for: it would teach the model the answer a person rejected."""
    chosen = rated_traces(engine, stack, kinds)
    keep: set[str] = set()
    replies: dict[str, str] = {}
    for record, verdict in chosen.items:
        if verdict.correction:
            replies[record.trace_id] = verdict.correction
            keep.add(record.trace_id)
        elif verdict.score is not None and verdict.score >= 0.5:
            keep.add(record.trace_id)
    return keep, replies
