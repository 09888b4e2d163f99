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
