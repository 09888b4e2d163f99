from __future__ import annotations

import pytest

from slmops.apps.quickstart import Question, build_quickstart, normalize, question_kind
from slmops.errors import StepInputError
from tests.fakes import ScriptedChatModel


def test_normalize_and_routing():
    assert normalize(Question(question="  who  wrote Hamlet ")).question == "who wrote Hamlet?"
    assert question_kind(Question(question="What is DNA?")) == "explain"
    assert question_kind(Question(question="How tall is Everest?")) == "answer"


def test_quickstart_routes_and_trims_with_any_model(spans_of):
    app = build_quickstart(model=ScriptedChatModel(["  Paris.  "]))  # type: ignore[arg-type]
    result = app.invoke({"question": "how big is France"})
    assert result.output == "Paris."
    spans = spans_of(result.trace_id)
    assert spans["route"]["attributes"]["slmops.decision.branch"] == "answer"


def test_quickstart_rejects_empty_questions():
    with pytest.raises(StepInputError, match="question"):
        build_quickstart(model=ScriptedChatModel(["x"])).run({"question": ""})  # type: ignore[arg-type]


@pytest.mark.model
def test_quickstart_on_the_shipped_model():
    assert "Paris" in build_quickstart().run({"question": "What is the capital of France?"})


@pytest.mark.model
def test_bundled_handbook_ingests_cleanly_and_answers_retrieval(workspace):
    from slmops.apps.quickstart import bundled_docs
    from slmops.data.corpus import Corpora

    corpora = Corpora(workspace)
    report = corpora.ingest("handbook", [bundled_docs()], message="bundled docs")
    assert report.documents == 6 and not report.skipped and report.chunks >= 12
    questions = {
        "Which environment variable chooses the workspace folder?": "02-workspace.md",
        "How do I roll retrieval back to an older corpus version?": "04-data-and-retrieval.md",
        "What is the failure policy of Concurrent?": "03-composing-apps.md",
        "How do I name a prompt version for production?": "06-prompts.md",
    }
    for question, expected in questions.items():
        _, hits = corpora.search("handbook", question, k=3)
        assert expected in [h.doc_id for h in hits], question
