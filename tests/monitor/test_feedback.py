"""Feedback in Python: validation, storage, kinds, redaction; rated traces as eval cases and
as training choices; figures per window; online scoring; drift of constructed traffic."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from sqlalchemy import update

from slmops.errors import NotFoundError
from slmops.monitor.feedback import FeedbackError, list_feedback, parse_feedback, record_feedback
from slmops.monitor.figures import Tally, window_figures, windows
from slmops.monitor.online import OnlineScorer, score_record
from slmops.monitor.records import load_record
from slmops.monitor.shifts import drift_report
from slmops.monitor.trace_data import cases_from_traces, training_choice
from slmops.store import Workspace
from slmops.store.redaction import Redactor
from slmops.store.schema import traces
from slmops.train.sources import examples_from_traces
from tests.monitor.traces import make_trace

T0 = 1_700_000_000.0


def test_scales_map_to_zero_one() -> None:
    assert parse_feedback({"trace_id": "abcdef", "score": 0}).normalized() == 0.0
    assert parse_feedback({"trace_id": "abcdef", "score": 1}).normalized() == 1.0
    assert parse_feedback({"trace_id": "abcdef", "score": 4}).normalized() == 0.75
    one_star = parse_feedback({"trace_id": "abcdef", "score": 1, "scale": "stars"})
    assert one_star.normalized() == 0.0 and one_star.scale_used() == "stars"
    with pytest.raises(FeedbackError, match="score 0 is outside 1-5"):
        parse_feedback({"trace_id": "abcdef", "score": 0, "scale": "stars"})


def test_feedback_is_stored_per_trace_with_sources_kept_apart(workspace: Workspace) -> None:
    trace = make_trace(workspace.engine, request_id="r-1")
    record_feedback(workspace.engine, {"trace_id": trace[:8], "score": 0, "comment": "stale"})
    record_feedback(workspace.engine, {"request_id": "r-1", "score": 1, "source": "reviewer"})
    rows = list_feedback(workspace.engine, limit=None)
    assert {(r["source"], r["score"], r["trace_id"]) for r in rows} == {
        ("user", 0.0, trace),
        ("reviewer", 1.0, trace),
    }
    assert [r["source"] for r in list_feedback(workspace.engine, kinds=["reviewed"])] == [
        "reviewer"
    ]
    with pytest.raises(NotFoundError, match="no stored trace"):
        record_feedback(workspace.engine, {"trace_id": "0123456789", "score": 1})
    with pytest.raises(FeedbackError, match="unknown feedback kind"):
        list_feedback(workspace.engine, kinds=["grumpy"])


def test_a_request_id_names_the_answer_sent_not_its_shadow_run(workspace: Workspace) -> None:
    engine = workspace.engine
    primary = make_trace(engine, request_id="r-9", started_at=T0)
    make_trace(engine, request_id="r-9", started_at=T0 + 5)  # a shadow not marked yet
    make_trace(engine, request_id="r-9", started_at=T0 - 5, attributes={"slmops.shadow_of": "x"})
    stored = record_feedback(engine, {"request_id": "r-9", "score": 1})
    assert stored["trace_id"] == primary


def test_the_scorer_waits_for_the_model_to_be_free(workspace: Workspace) -> None:
    trace = make_trace(workspace.engine, started_at=T0)
    busy = [True]
    scorer = OnlineScorer(workspace, share=1.0, idle=lambda: not busy[0], max_wait_s=30)
    scorer.start()
    scorer.offer(trace)
    time.sleep(0.3)
    assert scorer.scored == 0  # a request is generating: scoring waits
    busy[0] = False
    scorer.drain(timeout_s=10)
    scorer.stop()
    assert scorer.scored == 1


def test_stopping_the_scorer_does_not_wait_for_a_full_queue(workspace: Workspace) -> None:
    scorer = OnlineScorer(workspace, share=1.0, max_queue=2)
    for i in range(5):
        scorer.offer(f"{i:032x}")  # unknown traces: nothing to score, queue full, 3 dropped
    assert scorer.dropped == 3
    scorer.start()
    started = time.monotonic()
    scorer.stop(timeout_s=5)
    assert time.monotonic() - started < 2


def test_rating_from_python_uses_the_current_workspace(workspace: Workspace) -> None:
    import slmops

    trace = make_trace(workspace.engine)
    stored = slmops.rate(trace, score=2, stars=True, comment="vague")
    assert stored["score"] == 0.25 and stored["trace_id"] == trace
    assert list_feedback(workspace.engine)[0]["comment"] == "vague"


def test_comments_and_corrections_are_redacted_before_storage(workspace: Workspace) -> None:
    trace = make_trace(workspace.engine)
    redactor = Redactor(["email", "api_key"])
    record_feedback(
        workspace.engine,
        {
            "trace_id": trace,
            "score": 0,
            "comment": "mail me at ann@example.com",
            "correction": "use key sk-proj-abc123def456ghi789",
            "author": "bob@example.com",
        },
        redact=redactor.redact,
    )
    (row,) = list_feedback(workspace.engine)
    assert "ann@example.com" not in row["comment"] and "[REDACTED:email]" in row["comment"]
    assert "sk-proj" not in row["correction"]
    assert row["author"] == "[REDACTED:email]"


def test_rated_traces_become_eval_cases_with_lineage(workspace: Workspace) -> None:
    engine = workspace.engine
    wrong = make_trace(engine, question="Which flag pins a version?", answer="--latest")
    good = make_trace(engine, question="Where are traces?", answer="In slmops.db.", started_at=T0)
    off = make_trace(engine, question="Who won the cup?", answer="Brazil", started_at=T0 + 1)
    make_trace(engine, question="Unrated question", started_at=T0 + 2)
    record_feedback(engine, {"trace_id": wrong, "score": 0, "comment": "wrong flag"})
    record_feedback(
        engine,
        {
            "trace_id": wrong,
            "correction": "Use --version N.",
            "source": "reviewer",
            "labels": ["cli"],
        },
    )
    record_feedback(engine, {"trace_id": good, "score": 1})
    record_feedback(engine, {"trace_id": off, "score": 0, "labels": ["off-topic"]})

    cases, chosen = cases_from_traces(engine, "handbook-rag", ["negative"])
    by_question = {c.question(): c for c in cases}
    assert set(by_question) == {"Which flag pins a version?", "Who won the cup?"}
    corrected = by_question["Which flag pins a version?"]
    assert corrected.reference == "Use --version N."
    assert {"feedback:negative", "corrected", "cli"} <= set(corrected.tags)
    assert corrected.metadata["trace_id"] == wrong
    assert corrected.metadata["retrieved_ids"] == ["c1", "c2"]
    assert corrected.metadata["answer_given"] == "--latest"
    assert by_question["Who won the cup?"].answerable is False  # labelled off-topic
    only_corrected, _ = cases_from_traces(engine, "handbook-rag", ["any"], with_corrections=True)
    assert [c.reference for c in only_corrected] == ["Use --version N."]
    positive, _ = cases_from_traces(engine, "handbook-rag", ["positive"])
    assert [c.reference for c in positive] == ["In slmops.db."]  # an answer rated good
    with pytest.raises(FeedbackError, match="no traces of 'other'"):
        cases_from_traces(engine, "other", ["negative"])
    assert chosen.skipped == {}


def test_training_uses_good_answers_and_corrections_never_rejected_ones(
    workspace: Workspace,
) -> None:
    engine = workspace.engine
    good = make_trace(engine, answer="Run slmops prompt add.", started_at=T0)
    bad = make_trace(engine, question="Q2", answer="Wrong.", started_at=T0 + 1)
    fixed = make_trace(engine, question="Q3", answer="", refused=True, started_at=T0 + 2)
    record_feedback(engine, {"trace_id": good, "score": 1})
    record_feedback(engine, {"trace_id": bad, "score": 0})
    record_feedback(engine, {"trace_id": fixed, "score": 0, "correction": "Use --version."})
    keep, replies = training_choice(engine, "handbook-rag", ["positive", "corrected", "negative"])
    assert keep == {good, fixed} and replies == {fixed: "Use --version."}
    built = examples_from_traces(
        workspace,
        "handbook-rag",
        keep=lambda trace, _spans: trace["trace_id"] in keep,
        replies=replies,
    )
    answers = {e.metadata["trace_id"]: e.messages[-1].content for e in built.examples}
    assert answers == {good: "Run slmops prompt add.", fixed: "Use --version."}


def test_window_figures_count_traffic_refusals_tokens_and_feedback(workspace: Workspace) -> None:
    engine = workspace.engine
    for i in range(10):
        trace = make_trace(
            engine,
            started_at=T0 + i * 60,
            duration_ms=100.0 * (i + 1),
            refused=i < 3,
            relevance=0.1 if i < 2 else 0.8,
            completion_tokens=10,
            status="error" if i == 9 else "ok",
        )
        if i < 4:
            record_feedback(engine, {"trace_id": trace, "score": int(i % 2)}, now=T0 + i * 60)
    figures = window_figures(engine, "handbook-rag", T0, T0 + 3600)
    assert figures["requests"] == 10
    assert figures["error_rate"] == pytest.approx(0.1)
    assert figures["refusal_rate"] == pytest.approx(0.3)
    assert figures["low_relevance_share"] == pytest.approx(0.2)
    assert figures["mean_completion_tokens"] == pytest.approx(10)
    assert figures["p50_latency_ms"] == pytest.approx(550)
    assert figures["feedback_count"] == 4 and figures["feedback_positive_rate"] == 0.5
    assert window_figures(engine, "handbook-rag", T0 + 7200, T0 + 9000)["requests"] == 0
    assert windows(0, 100, 30) == [(0, 10), (10, 40), (40, 70), (70, 100)]


def test_only_served_requests_count_as_traffic(workspace: Workspace) -> None:
    engine = workspace.engine
    make_trace(engine, started_at=T0)  # served: has a request id
    make_trace(engine, started_at=T0 + 1, attributes={"slmops.origin": "console"})
    make_trace(engine, started_at=T0 + 2, attributes={"slmops.shadow_of": "abc"})
    eval_run = make_trace(engine, started_at=T0 + 3)
    with engine.begin() as connection:  # an eval or CLI run carries no request id
        connection.execute(
            update(traces).where(traces.c.trace_id == eval_run).values(attributes={})
        )
    assert window_figures(engine, "handbook-rag", T0, T0 + 60)["requests"] == 1


def test_histogram_percentiles_are_close_to_exact() -> None:
    exact = Tally()
    for latency in np.linspace(100, 5000, 400):
        exact.add_latency(float(latency))
    rolled = Tally.from_rollup(exact.to_rollup())
    for q in (50, 95):
        assert rolled.percentile(q) == pytest.approx(exact.percentile(q), rel=0.05)


def test_online_scorer_scores_a_share_off_the_request_path(workspace: Workspace) -> None:
    engine = workspace.engine
    ids = [make_trace(engine, started_at=T0 + i, refused=i == 0) for i in range(40)]
    scorer = OnlineScorer(workspace, share=0.5, seed=3)
    scorer.start()
    kept = [trace for trace in ids if scorer.offer(trace)]
    scorer.drain()
    scorer.stop()
    assert 10 <= len(kept) <= 30 and scorer.scored == len(kept) and scorer.failed == 0
    figures = window_figures(engine, "handbook-rag", T0, T0 + 100)
    assert figures["scored"] == len(kept)
    assert figures["retrieval_relevance"] == pytest.approx(0.8)
    record = load_record(engine, ids[0])
    scores = score_record(record, ["Run slmops prompt add to store a prompt."])
    assert scores["refused"] == 1.0 and scores["faithfulness"] is None  # refusals: n/a
    answered = score_record(load_record(engine, ids[1]), ["Run slmops prompt add to store it."])
    assert answered["faithfulness"] == 1.0 and answered["answer_tokens"] == 20


def test_drift_of_constructed_traffic(workspace: Workspace) -> None:
    engine = workspace.engine
    for i in range(40):  # baseline hour: short answers, few refusals, on-topic
        make_trace(engine, started_at=T0 + i * 60, completion_tokens=20 + i % 5, refused=i < 2)
    for i in range(40):  # next hour: long answers, many refusals, off-topic questions
        make_trace(
            engine,
            started_at=T0 + 3600 + i * 60,
            completion_tokens=60 + i % 5,
            refused=i < 20,
            relevance=0.1 if i < 20 else 0.8,
        )
    report = drift_report(workspace, "handbook-rag", (T0 + 3600, T0 + 7200), (T0, T0 + 3600))
    drifted = {s.measure: s.drifted for s in report.shifts}
    assert drifted == {
        "output_length_ks": True,
        "refusal_rate": True,
        "low_relevance_share": True,
    }
    steady = drift_report(workspace, "handbook-rag", (T0 + 1800, T0 + 3600), (T0, T0 + 1800))
    assert not any(s.drifted for s in steady.shifts if s.measure != "refusal_rate")
    figures = report.figures()
    assert figures["refusal_rate_shift"] == pytest.approx(0.45)
    assert figures["query_embedding_mmd"] is None  # no embedder given: not measured
    empty = drift_report(workspace, "handbook-rag", (T0 + 9000, T0 + 9600), (T0, T0 + 3600))
    assert "output_length_ks" in empty.skipped and not empty.shifts


def test_query_embedding_drift_with_the_shipped_embedder(
    workspace: Workspace, shipped_embedder: object
) -> None:
    engine = workspace.engine
    on_topic = [
        f"How do I {verb} a {thing}?"
        for verb in ("add", "tag", "list", "pin")
        for thing in ("prompt version", "corpus", "dataset", "stack")
    ]
    off_topic = [f"Who won the {year} football world cup final?" for year in range(1990, 1998)]
    random.Random(0).shuffle(on_topic)  # the same topics, split between two windows
    for i, question in enumerate(on_topic):
        make_trace(engine, question=question, started_at=T0 + (i % 2) * 100 + i)
    for i, question in enumerate(off_topic):
        make_trace(engine, question=question, started_at=T0 + 200 + i)
    embed = shipped_embedder.embed  # type: ignore[attr-defined]
    same = drift_report(
        workspace, "handbook-rag", (T0 + 100, T0 + 200), (T0, T0 + 100), embed=embed
    )
    moved = drift_report(
        workspace, "handbook-rag", (T0 + 200, T0 + 300), (T0, T0 + 100), embed=embed
    )
    same_mmd, moved_mmd = (
        next(s for s in r.shifts if s.measure == "query_embedding_mmd") for r in (same, moved)
    )
    assert not same_mmd.drifted
    assert moved_mmd.drifted and moved_mmd.statistic > 3 * same_mmd.statistic


def test_feedback_kinds_from_comma_separated_options() -> None:
    from slmops.monitor.feedback import parse_kinds

    assert parse_kinds("positive, corrected") == ["positive", "corrected"]
    assert parse_kinds(["negative", "reviewed,any"]) == ["negative", "reviewed", "any"]
    with pytest.raises(FeedbackError, match="unknown feedback kind.*grumpy; kinds: positive"):
        parse_kinds("positive,grumpy")
