"""Stored traces shaped like a served rag stack's (root, retrieval, model call, cite), made
directly in the store so monitor tests control time, answers and signals exactly."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Engine

from slmops.store.traces import save_trace


def make_trace(
    engine: Engine,
    *,
    stack: str = "handbook-rag",
    question: str = "How do I add a prompt?",
    answer: str = "Run slmops prompt add.",
    started_at: float = 1_000_000.0,
    duration_ms: float = 1000.0,
    refused: bool = False,
    relevance: float = 0.8,
    support: float = 0.9,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    status: str = "ok",
    request_id: str | None = None,
    chunk_ids: tuple[str, ...] = ("c1", "c2"),
    attributes: dict[str, Any] | None = None,
) -> str:
    trace_id = uuid.uuid4().hex
    start_ns = int(started_at * 1e9)
    end_ns = start_ns + int(duration_ms * 1e6)
    root_id, retrieval_id, llm_id, cite_id = (uuid.uuid4().hex[:16] for _ in range(4))
    output = {
        "question": question,
        "answer": answer,
        "refused": refused,
        "reason": "low relevance" if refused else None,
        "citations": [],
        "corpus": "docs",
        "corpus_version": 1,
        "relevance": relevance,
        "support": support,
    }
    # a served request by default: live traffic has a request id (eval and CLI runs do not)
    trace_attributes = {
        "slmops.stack.name": stack,
        "slmops.request_id": request_id or f"req-{trace_id[:12]}",
        **(attributes or {}),
    }

    def span(
        span_id: str, parent: str | None, name: str, kind: str, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "span_id": span_id,
            "trace_id": trace_id,
            "parent_id": parent,
            "name": name,
            "kind": kind,
            "status": status if parent is None else "ok",
            "start_ns": start_ns,
            "end_ns": end_ns,
            "error": None,
            "attributes": attrs,
            "events": [],
        }

    messages = [
        {"role": "system", "content": "Answer from the passages."},
        {"role": "user", "content": f"Passages: ...\nQuestion: {question}"},
    ]
    spans = [
        span(
            root_id,
            None,
            stack,
            "stack",
            {
                **trace_attributes,
                "slmops.input": json.dumps({"question": question}),
                "slmops.output": json.dumps(output),
            },
        ),
        span(
            retrieval_id,
            root_id,
            "retrieve",
            "retrieval",
            {
                "slmops.retrieval.corpus": "docs",
                "slmops.retrieval.version": 1,
                "slmops.retrieval.chunk_ids": list(chunk_ids),
                "slmops.retrieval.sources": [f"handbook.md:{i + 1}" for i in range(len(chunk_ids))],
            },
        ),
        span(
            llm_id,
            root_id,
            "answer",
            "llm",
            {
                "gen_ai.prompt": json.dumps(messages),
                "slmops.output": json.dumps(answer),
                "gen_ai.usage.input_tokens": prompt_tokens,
                "gen_ai.usage.output_tokens": completion_tokens,
                "gen_ai.response.model": "local:smollm2-135m",
            },
        ),
        span(
            cite_id,
            root_id,
            "cite",
            "cite",
            {
                "slmops.cite.relevance": relevance,
                "slmops.cite.support": support,
                "slmops.cite.refused": refused,
            },
        ),
    ]
    save_trace(
        engine,
        {
            "trace_id": trace_id,
            "name": stack,
            "status": status,
            "started_at": started_at,
            "duration_ms": duration_ms,
            "span_count": len(spans),
            "error": None if status == "ok" else "boom",
            "attributes": trace_attributes,
        },
        spans,
    )
    return trace_id
