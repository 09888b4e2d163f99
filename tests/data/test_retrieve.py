from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmops.core import Chain, Function
from slmops.data.corpus import Corpora
from slmops.data.retrieve import RetrievalResult, Retrieve
from slmops.errors import StepDefinitionError

pytestmark = pytest.mark.model


class Question(BaseModel):
    question: str


def test_retrieve_step_records_lineage_and_sits_in_a_chain(workspace, docs, spans_of):
    (docs / "a.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    (docs / "b.md").write_text("# Shipping\n\nShipping is free over 50 euros.\n")
    Corpora(workspace).ingest("kb", [docs])

    def answer(result: RetrievalResult) -> str:
        return result.hits[0].text

    chain = Chain("qa", [Retrieve("kb", k=2, input_type=Question), Function(answer)])
    result = chain.invoke({"question": "how long for a refund?"})
    assert "five business days" in result.output
    span = spans_of(result.trace_id)["retrieve"]["attributes"]
    assert span["slmops.retrieval.corpus"] == "kb"
    assert span["slmops.retrieval.version"] == 1
    assert len(span["slmops.retrieval.chunk_ids"]) == 2
    assert span["slmops.retrieval.sources"][0].startswith("a.md, lines")
    assert spans_of(result.trace_id)["retrieve"]["kind"] == "retrieval"


def test_pinned_retrieve_keeps_returning_its_version(workspace, docs):
    (docs / "a.md").write_text("Refunds take five business days.\n")
    corpora = Corpora(workspace)
    corpora.ingest("kb", [docs])
    (docs / "a.md").write_text("Refunds take ten business days.\n")
    corpora.ingest("kb", [docs])
    pinned, latest = Retrieve("kb@1", k=1), Retrieve("kb", k=1)
    assert "five" in pinned.run("refunds").hits[0].text
    assert "ten" in latest.run("refunds").hits[0].text
    assert pinned.run("refunds").version == 1


def test_cached_retrieval_is_keyed_on_the_resolved_version(workspace, docs):
    (docs / "a.md").write_text("Refunds take five business days.\n")
    corpora = Corpora(workspace)
    corpora.ingest("kb", [docs])
    step = Retrieve("kb", k=1, cache=True)
    assert "five" in step.run("refunds").hits[0].text
    (docs / "a.md").write_text("Refunds take ten business days.\n")
    corpora.ingest("kb", [docs])
    assert "ten" in step.run("refunds").hits[0].text  # a new version is a new cache key


def test_retrieve_definition_errors():
    with pytest.raises(StepDefinitionError, match="mode must be"):
        Retrieve("kb", mode="semantic")  # type: ignore[arg-type]
    with pytest.raises(StepDefinitionError, match="no field 'query'"):
        Retrieve("kb", input_type=Question, query_field="query")
    with pytest.raises(StepDefinitionError, match="cannot filter on"):
        Retrieve("kb", where={"nope": 1})
