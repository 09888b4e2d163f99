"""The review queue: which traces it samples, how reviews are stored, and that reviewed
traces leave it (so a review session can be resumed)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from slmops.monitor.feedback import FeedbackError, list_feedback, record_feedback
from slmops.monitor.records import load_record
from slmops.monitor.review import (
    ReviewError,
    candidates,
    parse_labels,
    record_review,
    review_queue,
    reviewed_traces,
)
from slmops.store.traces import save_trace

T0 = 1_700_000_000.0
HOUR = 3600.0


def add_trace(
    engine: Engine,
    *,
    stack: str = "qa",
    started_at: float = T0,
    question: str = "How do I rotate the key?",
    answer: str = "Run the rotate command.",
    support: float | None = 0.8,
    relevance: float | None = 0.7,
    refused: bool = False,
    status: str = "ok",
    shadow_of: str | None = None,
    sources: Sequence[str] = ("guide.md:12",),
    model: str = "local:tiny@3",
    cite: bool = True,
) -> str:
    """Store a trace shaped like a RAG stack's: root, retrieval, llm and cite spans."""
    trace_id = hashlib.sha256(
        f"{stack}|{started_at}|{question}|{shadow_of}|{status}".encode()
    ).hexdigest()[:32]
    start = int(started_at * 1e9)
    reason = "no retrieved passage is about the question" if refused else None
    output = {
        "answer": "I cannot answer that from the documents." if refused else answer,
        "refused": refused,
        "reason": reason,
        "relevance": relevance,
        "support": support,
        "citations": [],
    }

    def span(n: int, name: str, kind: str, parent: str | None, **attributes: Any) -> dict:
        return {
            "span_id": f"{trace_id[:12]}{n:04x}",
            "trace_id": trace_id,
            "parent_id": parent,
            "name": name,
            "kind": kind,
            "status": status if parent is None else "ok",
            "start_ns": start + n * 1_000_000,
            "end_ns": start + (n + 1) * 10_000_000,
            "error": None,
            "attributes": attributes,
            "events": [],
        }

    root = span(0, stack, "stack", None)
    root["attributes"] = {
        "slmops.input": json.dumps({"question": question}),
        "slmops.output": json.dumps(output),
    }
    rows = [
        root,
        span(
            1,
            "retrieve",
            "retrieval",
            root["span_id"],
            **{
                "slmops.retrieval.corpus": "docs",
                "slmops.retrieval.version": 1,
                "slmops.retrieval.chunk_ids": [f"c{i}" for i in range(len(sources))],
                "slmops.retrieval.sources": list(sources),
            },
        ),
        span(
            2,
            "answer",
            "llm",
            root["span_id"],
            **{
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 14,
            },
        ),
    ]
    if cite:
        cite_attributes: dict[str, Any] = {"slmops.cite.refused": refused}
        if support is not None:
            cite_attributes["slmops.cite.support"] = support
        if relevance is not None:
            cite_attributes["slmops.cite.relevance"] = relevance
        if reason:
            cite_attributes["slmops.cite.reason"] = reason
        rows.append(span(3, "cite", "cite", root["span_id"], **cite_attributes))
    # a served request (a request id), unless it is a shadow run of one
    attributes: dict[str, Any] = {"slmops.request_id": f"req-{trace_id[:8]}"}
    if shadow_of:
        attributes["slmops.shadow_of"] = shadow_of
    save_trace(
        engine,
        {
            "trace_id": trace_id,
            "name": stack,
            "status": status,
            "started_at": started_at,
            "duration_ms": 40.0,
            "span_count": len(rows),
            "error": "boom" if status == "error" else None,
            "attributes": attributes,
        },
        rows,
    )
    return trace_id


def many(engine: Engine, count: int, **kwargs: Any) -> list[str]:
    """``count`` traces a minute apart, with supports 0.0, 0.1, ... cycling to 0.9."""
    return [
        add_trace(
            engine,
            started_at=T0 + 60 * i,
            question=f"Question number {i}?",
            support=(i % 10) / 10,
            **kwargs,
        )
        for i in range(count)
    ]


def queue(engine: Engine, **kwargs: Any) -> list[str]:
    return review_queue(engine, "qa", **{"sample": 100, **kwargs})


# --- what is in the queue ------------------------------------------------------------------


def test_queue_holds_successful_non_shadow_traces_of_the_stack_in_time_order(workspace):
    engine = workspace.engine
    late = add_trace(engine, started_at=T0 + 60, question="later")
    early = add_trace(engine, started_at=T0, question="earlier")
    add_trace(engine, started_at=T0 + 30, status="error", question="failed")
    add_trace(engine, started_at=T0 + 40, shadow_of=early, question="a shadow run")
    add_trace(engine, stack="other", started_at=T0 + 50)
    assert queue(engine) == [early, late]
    assert review_queue(workspace.engine, "missing", sample=5) == []


def test_time_window(workspace):
    engine = workspace.engine
    ids = [add_trace(engine, started_at=T0 + h * HOUR, question=f"q{h}") for h in range(4)]
    assert queue(engine, since=T0 + HOUR) == ids[1:]
    assert queue(engine, until=T0 + 2 * HOUR) == ids[:2]
    assert queue(engine, since=T0 + HOUR, until=T0 + 3 * HOUR) == ids[1:3]


def test_feedback_filter_counts_user_feedback_not_this_queues_reviews(workspace):
    engine = workspace.engine
    liked, disliked, corrected, quiet = many(engine, 4)
    record_feedback(engine, {"trace_id": liked, "score": 1})
    record_feedback(engine, {"trace_id": disliked, "score": 0, "comment": "wrong"})
    record_feedback(engine, {"trace_id": corrected, "correction": "Use the flag."})
    assert queue(engine, feedback=["negative"]) == [disliked]
    assert queue(engine, feedback=["positive", "negative"]) == [liked, disliked]
    assert queue(engine, feedback=["corrected"]) == [corrected]
    assert queue(engine, feedback=["any"]) == [liked, disliked, corrected]
    # A reviewer's verdict is not user feedback: a bad review does not make a trace "negative".
    record_review(engine, quiet, verdict="bad", reviewer="ann")
    assert queue(engine, feedback=["negative"]) == [disliked]
    # ... but another reviewer may ask for what others reviewed.
    assert queue(engine, feedback=["reviewed"], reviewer="bob") == [quiet]
    with pytest.raises(FeedbackError, match="unknown feedback kind"):
        queue(engine, feedback=["angry"])


def test_monitor_signal_filters(workspace):
    engine = workspace.engine
    weak = add_trace(engine, started_at=T0, question="weak", support=0.3, relevance=0.9)
    off_topic = add_trace(engine, started_at=T0 + 1, question="off", support=0.9, relevance=0.2)
    refusal = add_trace(
        engine, started_at=T0 + 2, question="refused", support=0.1, relevance=0.1, refused=True
    )
    strong = add_trace(engine, started_at=T0 + 3, question="strong", support=0.9, relevance=0.9)
    uncited = add_trace(engine, started_at=T0 + 4, question="no cite step", cite=False)
    assert queue(engine, max_support=0.5) == [weak, refusal]
    assert queue(engine, max_support=0.3) == [weak, refusal]  # at most: 0.3 is kept
    assert queue(engine, max_relevance=0.5) == [off_topic, refusal]
    assert queue(engine, max_support=0.5, max_relevance=0.5) == [refusal]
    assert queue(engine, refused=True) == [refusal]
    assert queue(engine, refused=False) == [weak, off_topic, strong, uncited]
    by_id = {c.trace_id: c for c in candidates(engine, "qa")}
    assert by_id[refusal].refused and not by_id[weak].refused
    assert by_id[uncited].support is None and by_id[weak].support == pytest.approx(0.3)


# --- sampling ------------------------------------------------------------------------------


def test_sample_is_seeded_deterministic_and_time_ordered(workspace):
    engine = workspace.engine
    ids = many(engine, 30)
    first = review_queue(engine, "qa", sample=6, seed=1)
    assert first == review_queue(engine, "qa", sample=6, seed=1)
    assert len(first) == 6 and set(first) <= set(ids)
    assert first == sorted(first, key=ids.index)  # time order
    assert first != review_queue(engine, "qa", sample=6, seed=2)
    assert first != ids[:6]  # a sample, not the oldest six
    # A larger sample extends the same sample rather than drawing a new one.
    assert set(first) <= set(review_queue(engine, "qa", sample=12, seed=1))
    assert review_queue(engine, "qa", sample=100, seed=1) == ids


def test_worst_first_takes_the_lowest_support_first(workspace):
    engine = workspace.engine
    ids = many(engine, 20)  # supports 0.0 ... 0.9, each twice
    no_signal = add_trace(engine, started_at=T0 - 60, question="uncited", cite=False)
    worst = review_queue(engine, "qa", sample=5, order="worst")
    assert worst[:2] in ([ids[0], ids[10]], [ids[10], ids[0]])  # support 0.0
    assert set(worst[2:4]) == {ids[1], ids[11]}  # support 0.1
    assert worst[4] in (ids[2], ids[12])
    assert review_queue(engine, "qa", sample=30, order="worst")[-1] == no_signal


def test_bad_arguments(workspace):
    with pytest.raises(ReviewError, match="at least 1"):
        review_queue(workspace.engine, "qa", sample=0)
    with pytest.raises(ReviewError, match="order"):
        review_queue(workspace.engine, "qa", sample=1, order="best")  # type: ignore[arg-type]


# --- reviews and resuming --------------------------------------------------------------------


def test_reviewed_traces_leave_the_queue_and_nothing_new_comes_in(workspace):
    engine = workspace.engine
    many(engine, 30)
    sampled = review_queue(engine, "qa", sample=5, seed=7)
    record_review(engine, sampled[0], verdict="good", reviewer=None)
    record_review(engine, sampled[3], verdict="bad", correction="Use --force.", reviewer=None)
    assert review_queue(engine, "qa", sample=5, seed=7) == [
        sampled[1],
        sampled[2],
        sampled[4],
    ]
    assert review_queue(engine, "qa", sample=5, seed=7, include_reviewed=True) == sampled
    assert reviewed_traces(engine, sampled) == {sampled[0], sampled[3]}
    # User feedback does not count as a review.
    record_feedback(engine, {"trace_id": sampled[1], "score": 0})
    assert sampled[1] in review_queue(engine, "qa", sample=5, seed=7)
    for trace_id in sampled:
        record_review(engine, trace_id, verdict="good", reviewer=None)
    assert review_queue(engine, "qa", sample=5, seed=7) == []


def test_a_named_reviewer_has_a_queue_of_their_own(workspace):
    engine = workspace.engine
    ids = many(engine, 3)
    record_review(engine, ids[0], verdict="good", reviewer="ann")
    assert queue(engine, reviewer="ann") == ids[1:]
    assert queue(engine, reviewer="bob") == ids  # bob has reviewed nothing yet
    assert queue(engine) == ids[1:]  # without a name, any review counts
    assert reviewed_traces(engine, ids, "bob") == set()


def test_record_review_stores_reviewer_feedback(workspace):
    engine = workspace.engine
    good, bad, fixed, tagged = many(engine, 4)
    record_review(engine, good, verdict="good", reviewer="ann", comment="fine")
    record_review(engine, bad, verdict="bad", labels=["off-topic"], reviewer="ann")
    record_review(
        engine,
        fixed,
        verdict="bad",
        correction="Mail ops@example.com to rotate it.",
        reviewer="ann",
        redact=lambda text: text.replace("ops@example.com", "[REDACTED:email]"),
    )
    row = record_review(engine, tagged, verdict=None, labels=["stale", "stale", "docs:v2"])
    assert row["score"] is None and row["labels"] == ["stale", "docs:v2"]
    stored = {r["trace_id"]: r for r in list_feedback(engine, source="reviewer")}
    assert len(stored) == 4
    assert all(r["source"] == "reviewer" and r["scale"] == "thumbs" for r in stored.values())
    assert stored[good]["raw_score"] == 1 and stored[good]["score"] == 1.0
    assert stored[good]["comment"] == "fine" and stored[good]["author"] == "ann"
    assert stored[bad]["raw_score"] == 0 and stored[bad]["labels"] == ["off-topic"]
    assert stored[fixed]["score"] == 0.0
    assert stored[fixed]["correction"] == "Mail [REDACTED:email] to rotate it."
    assert stored[fixed]["stack"] == "qa"
    assert stored[tagged]["author"] is None
    with pytest.raises(FeedbackError, match="at least one of"):
        record_review(engine, good, verdict=None)
    with pytest.raises(ReviewError, match="verdict"):
        record_review(engine, good, verdict="meh")  # type: ignore[arg-type]


def test_parse_labels():
    assert parse_labels(" wrong-source, stale ,, docs:v2 ") == ["wrong-source", "stale", "docs:v2"]
    assert parse_labels("") == []
    with pytest.raises(FeedbackError, match="invalid labels: label 'two words'"):
        parse_labels("ok, two words")
    with pytest.raises(FeedbackError, match="at most 20"):
        parse_labels(",".join(f"l{i}" for i in range(21)))


def test_synthetic_traces_read_like_stack_traces(workspace):
    """The helper's traces give the record the review panel shows."""
    trace_id = add_trace(workspace.engine, refused=True, support=0.1, relevance=0.2)
    record = load_record(workspace.engine, trace_id)
    assert record.question == "How do I rotate the key?"
    assert record.refused and record.refusal_reason
    assert record.sources == ["guide.md:12"]
    assert record.support == pytest.approx(0.1) and record.answered_by == "local:tiny@3"
