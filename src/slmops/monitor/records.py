"""What one stored trace says about a live request: question, answer, refusal, sources,
latency, tokens, the version that answered. Feedback, review, online scoring and datasets
from traces all read traces through this one view."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from slmops.errors import NotFoundError
from slmops.store.schema import spans, traces
from slmops.store.traces import token_usage


@dataclass
class TraceRecord:
    trace_id: str
    stack: str
    started_at: float
    status: str
    latency_ms: float
    question: str
    answer: str
    input: Any = None  # the stack's input as stored (text, or an object)
    refused: bool = False
    refusal_reason: str | None = None
    relevance: float | None = None  # best question-passage relevance the cite step saw
    support: float | None = None  # how well the passages support the answer
    retrieved_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "file:line" of each retrieved chunk
    retrievals: list[tuple[str, int, list[str]]] = field(
        default_factory=list
    )  # corpus, version, ids
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_id: str | None = None
    answered_by: str = ""  # the model version(s) that answered
    shadow_of: str | None = None  # set on a shadow run: the trace it shadowed
    error: str | None = None
    spans: list[dict[str, Any]] = field(default_factory=list)


def json_or_text(text: Any) -> Any:
    """A stored attribute decoded from JSON, or as it is when it is not JSON."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def question_of(value: Any) -> str:
    """The question a stack input asks: its text, or its ``question``/only text field."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("question", "query", "input", "text", "message"):
            if isinstance(value.get(key), str):
                return str(value[key])
        texts = [v for v in value.values() if isinstance(v, str)]
        if len(texts) == 1:
            return texts[0]
    return json.dumps(value, ensure_ascii=False) if value is not None else ""


def _answer(value: Any) -> tuple[str, bool, str | None]:
    if isinstance(value, str):
        return value, False, None
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        return value["answer"], bool(value.get("refused")), value.get("reason")
    return json.dumps(value, ensure_ascii=False) if value is not None else "", False, None


def record_of(trace: dict[str, Any], span_rows: Sequence[dict[str, Any]]) -> TraceRecord:
    """The view of one trace (its row and its spans, as the store returns them)."""
    root = next((s for s in span_rows if s["parent_id"] is None), None)
    root_attributes = root["attributes"] if root else {}
    stored_input = json_or_text(root_attributes.get("slmops.input"))
    if isinstance(stored_input, list):  # a chat request: the last user turn is the question
        users = [m for m in stored_input if isinstance(m, dict) and m.get("role") == "user"]
        question = str(users[-1].get("content", "")) if users else ""
    else:
        question = question_of(stored_input)
    output = json_or_text(root_attributes.get("slmops.output"))
    answer, refused, reason = _answer(output)
    record = TraceRecord(
        trace_id=trace["trace_id"],
        stack=trace["name"],
        started_at=trace["started_at"],
        status=trace["status"],
        latency_ms=trace["duration_ms"],
        question=question,
        answer=answer,
        input=stored_input,
        refused=refused,
        refusal_reason=reason,
        error=trace.get("error"),
        request_id=(trace.get("attributes") or {}).get("slmops.request_id"),
        shadow_of=(trace.get("attributes") or {}).get("slmops.shadow_of"),
        spans=list(span_rows),
    )
    if isinstance(output, dict):
        record.relevance = _float(output.get("relevance"))
        record.support = _float(output.get("support"))
    answered: list[str] = []
    for span in span_rows:
        attributes = span["attributes"]
        if span["kind"] == "retrieval" and attributes.get("slmops.retrieval.chunk_ids"):
            record.retrieved_ids += list(attributes["slmops.retrieval.chunk_ids"])
            record.sources += list(attributes.get("slmops.retrieval.sources") or [])
            record.retrievals.append(
                (
                    str(attributes.get("slmops.retrieval.corpus")),
                    int(attributes.get("slmops.retrieval.version") or 0),
                    list(attributes["slmops.retrieval.chunk_ids"]),
                )
            )
        if span["kind"] == "cite" and record.relevance is None:
            record.relevance = _float(attributes.get("slmops.cite.relevance"))
            record.support = _float(attributes.get("slmops.cite.support"))
        if span["kind"] == "llm" and attributes.get("gen_ai.response.model"):
            answered.append(str(attributes["gen_ai.response.model"]))
    record.answered_by = ",".join(dict.fromkeys(answered))
    record.prompt_tokens, record.completion_tokens = token_usage(span_rows)
    return record


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


_CHUNK = 500


def load_records(engine: Engine, trace_ids: Sequence[str]) -> list[TraceRecord]:
    """The records of these traces, in the order given (missing ones are left out)."""
    if len(trace_ids) > _CHUNK:  # databases cap the parameters of one statement
        return [
            record
            for start in range(0, len(trace_ids), _CHUNK)
            for record in load_records(engine, trace_ids[start : start + _CHUNK])
        ]
    if not trace_ids:
        return []
    with engine.connect() as connection:
        rows = {
            r.trace_id: dict(r._mapping)
            for r in connection.execute(select(traces).where(traces.c.trace_id.in_(trace_ids)))
        }
        span_rows: dict[str, list[dict[str, Any]]] = {}
        for row in connection.execute(
            select(spans).where(spans.c.trace_id.in_(list(rows))).order_by(spans.c.start_ns)
        ):
            span_rows.setdefault(row.trace_id, []).append(dict(row._mapping))
    return [record_of(rows[t], span_rows.get(t, [])) for t in trace_ids if t in rows]


def load_record(engine: Engine, trace_id: str) -> TraceRecord:
    records = load_records(engine, [trace_id])
    if not records:
        raise NotFoundError(f"no trace with id {trace_id!r}; see 'slmops trace list'")
    return records[0]
