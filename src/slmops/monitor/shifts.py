"""Drift of a stack's live traffic: one window of traces against a baseline (the window
before it, the same window some time earlier, or the corpus the stack answers from).

The per-trace values come from the stored spans (questions from the root span's input,
relevance and refusals from the cite step, generated tokens from the model calls); the
statistics are in :mod:`slmops.monitor.drift`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, func, select

from slmops.data.corpus import corpora_for
from slmops.errors import SlmopsError
from slmops.monitor import drift
from slmops.monitor.figures import LIVE_TRAFFIC
from slmops.monitor.records import json_or_text, question_of
from slmops.store.schema import spans, traces
from slmops.store.workspace import Workspace

Embed = Callable[[Sequence[str]], Any]

DRIFT_FIGURES: dict[str, str] = {
    "query_embedding_mmd": "squared MMD (RBF kernel) between the windows' question embeddings",
    "output_length_ks": "Kolmogorov-Smirnov distance between generated-token counts",
    "refusal_rate_shift": "absolute change of the refusal rate",
    "low_relevance_shift": "rise of the share of questions with low retrieval relevance",
}
"""Drift figures (the statistic of each measure) usable in monitor tables and alert rules."""

_MEASURE_FIGURE = {
    "query_embedding_mmd": "query_embedding_mmd",
    "output_length_ks": "output_length_ks",
    "refusal_rate": "refusal_rate_shift",
    "low_relevance_share": "low_relevance_shift",
}


@dataclass
class WindowSample:
    """Per-trace values of one window (questions sampled down to ``max_questions``)."""

    questions: list[str] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    relevance: list[float] = field(default_factory=list)
    refused: list[bool] = field(default_factory=list)


def window_sample(
    engine: Engine, stack: str, start: float, end: float, *, max_questions: int = 500
) -> WindowSample:
    """Per-trace values of the window's answered traces (shadow runs left out); questions
    of at most ``max_questions`` traces, chosen by a seeded order so a report repeats and
    memory stays bounded whatever the traffic."""
    sample = WindowSample()
    in_window = and_(
        traces.c.name == stack,
        traces.c.started_at >= start,
        traces.c.started_at < end,
        traces.c.status == "ok",
        LIVE_TRAFFIC,
    )
    window_ids = select(traces.c.trace_id).where(in_window)
    with engine.connect() as connection:
        sample.lengths = [
            float(row[0] or 0)
            for row in connection.execute(
                select(func.sum(spans.c.attributes["gen_ai.usage.output_tokens"].as_integer()))
                .where(spans.c.trace_id.in_(window_ids), spans.c.kind == "llm")
                .group_by(spans.c.trace_id)
            )
        ]
        for relevance, refused in connection.execute(
            select(
                spans.c.attributes["slmops.cite.relevance"].as_float(),
                spans.c.attributes["slmops.cite.refused"].as_boolean(),
            ).where(spans.c.trace_id.in_(window_ids), spans.c.kind == "cite")
        ):
            if relevance is not None:
                sample.relevance.append(float(relevance))
            sample.refused.append(bool(refused))
        ids = [row[0] for row in connection.execute(window_ids)]
        if len(ids) > max_questions:  # seeded, so a report is repeatable
            ids = random.Random(0).sample(ids, max_questions)
        inputs = []
        for first in range(0, len(ids), 500):
            inputs += [
                row[0]
                for row in connection.execute(
                    select(spans.c.attributes["slmops.input"].as_string()).where(
                        spans.c.trace_id.in_(ids[first : first + 500]),
                        spans.c.parent_id.is_(None),
                    )
                )
                if row[0]
            ]
    questions = [question_of(json_or_text(text)) for text in inputs]
    sample.questions = [q for q in questions if q.strip()]
    return sample


def _embedded(embed: Embed, texts: Sequence[str], batch: int = 16) -> np.ndarray:
    """Embeddings in small batches: the embedder is shared with retrieval on the request
    path, and a request waits at most for one small batch, never for the whole window."""
    parts = [
        np.asarray(embed(texts[i : i + batch]), np.float64) for i in range(0, len(texts), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def corpus_vectors(workspace: Workspace, stack: str, *, max_points: int = 500) -> np.ndarray:
    """Chunk vectors of the corpus version the stack's newest traces retrieved from."""
    with workspace.engine.connect() as connection:
        row = connection.execute(
            select(
                spans.c.attributes["slmops.retrieval.corpus"].as_string(),
                spans.c.attributes["slmops.retrieval.version"].as_integer(),
            )
            .join(traces, traces.c.trace_id == spans.c.trace_id)
            .where(traces.c.name == stack, spans.c.kind == "retrieval")
            .order_by(traces.c.started_at.desc())
            .limit(1)
        ).first()
    if row is None or row[0] is None:
        raise SlmopsError(f"no retrieval in the traces of {stack!r}: no corpus to compare with")
    corpora = corpora_for(workspace)
    vectors = corpora.vector_index(corpora.resolve(f"{row[0]}@{row[1]}")).vectors
    if len(vectors) > max_points:
        chosen = np.random.default_rng(0).choice(len(vectors), max_points, replace=False)
        vectors = vectors[np.sort(chosen)]
    return np.asarray(vectors, dtype=np.float64)


@dataclass
class DriftReport:
    """The shifts of one window against its baseline, and why any measure was left out."""

    shifts: list[drift.Shift] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # measure -> reason

    def figures(self) -> dict[str, float | None]:
        found = {_MEASURE_FIGURE[s.measure]: s.statistic for s in self.shifts}
        return {name: found.get(name) for name in DRIFT_FIGURES}


def drift_report(
    workspace: Workspace,
    stack: str,
    current: tuple[float, float],
    baseline: tuple[float, float] | None,
    *,
    embed: Embed | None = None,
    against_corpus: bool = False,
) -> DriftReport:
    """Compare ``current`` with ``baseline`` (a time range; for query embeddings the corpus
    instead, with ``against_corpus``). Measures with too few values in a window are skipped
    with the reason, never guessed."""
    engine = workspace.engine
    now = window_sample(engine, stack, *current)
    before = window_sample(engine, stack, *baseline) if baseline else WindowSample()
    report = DriftReport()

    def attempt(measure: str, compute: Callable[[], drift.Shift]) -> None:
        try:
            report.shifts.append(compute())
        except (ValueError, SlmopsError) as exc:
            report.skipped[measure] = str(exc)

    if embed is not None:

        def embedding_shift() -> drift.Shift:
            if len(now.questions) < drift.MIN_SAMPLES:
                raise ValueError(
                    f"{len(now.questions)} questions in the window; "
                    f"at least {drift.MIN_SAMPLES} needed"
                )
            reference = (
                corpus_vectors(workspace, stack)
                if against_corpus
                else _embedded(embed, before.questions)
                if len(before.questions) >= drift.MIN_SAMPLES
                else None
            )
            if reference is None:
                raise ValueError(
                    f"{len(before.questions)} questions in the baseline; "
                    f"at least {drift.MIN_SAMPLES} needed"
                )
            return drift.embedding_drift(reference, _embedded(embed, now.questions))

        attempt("query_embedding_mmd", embedding_shift)
    attempt("output_length_ks", lambda: drift.length_shift(before.lengths, now.lengths))
    attempt("refusal_rate", lambda: drift.rate_shift(before.refused, now.refused))
    attempt("low_relevance_share", lambda: drift.topic_shift(before.relevance, now.relevance))
    return report
