"""What the trace page shows about one trace beyond its spans: the passages it retrieved
(with their text, from the corpus versions it used), the versions that answered, and the
feedback given on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from slmops.data.corpus import corpora_for
from slmops.errors import SlmopsError
from slmops.store.schema import feedback
from slmops.store.workspace import Workspace
from slmops.ui.formatting import parse_json_object


@dataclass
class Passage:
    corpus: str
    version: int
    chunk_id: str
    source: str  # "file, lines a-b" as the retrieval recorded it
    text: str | None  # None when the corpus version is not in this workspace


@dataclass
class Retrieved:
    passages: list[Passage]
    missing: list[str]  # why some passages have no text ("corpus docs@1: ...")


def retrieved_passages(workspace: Workspace, span_rows: Sequence[dict[str, Any]]) -> Retrieved:
    """Every passage of every retrieval span, in retrieval order, paired with its source
    and (where the corpus version is still there) its text."""
    found = Retrieved([], [])
    for span in span_rows:
        attributes = span.get("attributes") or {}
        ids = [str(i) for i in attributes.get("slmops.retrieval.chunk_ids") or []]
        if span["kind"] != "retrieval" or not ids:
            continue
        corpus = str(attributes.get("slmops.retrieval.corpus"))
        version = int(attributes.get("slmops.retrieval.version") or 0)
        sources = [str(s) for s in attributes.get("slmops.retrieval.sources") or []]
        texts: dict[str, str] = {}
        try:
            corpora = corpora_for(workspace)
            index = corpora.vector_index(corpora.resolve(f"{corpus}@{version}"))
            texts = {str(row["chunk_id"]): str(row["text"]) for row in index.rows_for(ids)}
        except SlmopsError as exc:  # the corpus or version is gone: show the sources
            found.missing.append(f"corpus {corpus}@{version}: {exc}")
        for number, chunk_id in enumerate(ids):
            found.passages.append(
                Passage(
                    corpus=corpus,
                    version=version,
                    chunk_id=chunk_id,
                    source=sources[number] if number < len(sources) else chunk_id,
                    text=texts.get(chunk_id),
                )
            )
    return found


def versions_of(span_rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The corpus, prompt and model versions the stack ran with (its root span's
    ``slmops.stack.*`` attributes), plus the prompt versions and models its calls used."""
    root = next((s for s in span_rows if s["parent_id"] is None), None)
    attributes = (root or {}).get("attributes") or {}
    versions = {
        group: {str(k): str(v) for k, v in parse_json_object(attributes.get(key)).items()}
        for group, key in (
            ("corpora", "slmops.stack.corpora"),
            ("prompts", "slmops.stack.prompts"),
            ("models", "slmops.stack.models"),
        )
    }
    for span in span_rows:
        span_attributes = span.get("attributes") or {}
        if "slmops.prompt.version" in span_attributes:
            versions["prompts"].setdefault(
                str(span["name"]), str(span_attributes["slmops.prompt.version"])
            )
        if span["kind"] == "retrieval" and "slmops.retrieval.corpus" in span_attributes:
            versions["corpora"].setdefault(
                str(span_attributes["slmops.retrieval.corpus"]),
                f"{span_attributes['slmops.retrieval.corpus']}@"
                f"{span_attributes.get('slmops.retrieval.version')}",
            )
        if span["kind"] == "llm" and span_attributes.get("gen_ai.response.model"):
            versions["models"].setdefault(
                str(span["name"]), str(span_attributes["gen_ai.response.model"])
            )
    return {group: found for group, found in versions.items() if found}


def feedback_for_trace(engine: Engine, trace_id: str) -> list[dict[str, Any]]:
    """The feedback given on one trace, oldest first."""
    with engine.connect() as connection:
        return [
            dict(row._mapping)
            for row in connection.execute(
                select(feedback)
                .where(feedback.c.trace_id == trace_id)
                .order_by(feedback.c.created_at, feedback.c.id)
            )
        ]
