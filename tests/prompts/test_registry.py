from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmops.errors import NotFoundError
from slmops.prompts.registry import PromptError, PromptRegistry
from tests.cli.test_cli import assert_one_line_error, slmops
from tests.fakes import ScriptedChatModel


class Question(BaseModel):
    question: str
    context: str


@pytest.fixture
def registry(workspace) -> PromptRegistry:
    return PromptRegistry(workspace)


def test_versions_are_immutable_and_identical_adds_are_no_ops(registry):
    first, created = registry.add("qa", "Q: {{ question }}", message="first")
    assert (first.ref, created, first.variables) == ("qa@1", True, ["question"])
    again, created = registry.add("qa", "Q: {{ question }}")
    assert (again.version, created) == (1, False)
    second, created = registry.add(
        "qa",
        "Context: {{ context }}\nQ: {{ question }}",
        system="Answer from {{ context }} only.",
        message="add context",
    )
    assert (second.version, created) == (2, True)
    assert second.variables == ["context", "question"]
    assert [v.message for v in registry.log("qa")] == ["add context", "first"]
    assert registry.get("qa@1").template == "Q: {{ question }}"  # old versions stay as they were
    assert registry.get("qa").version == registry.get("qa@latest").version == 2


def test_tags_name_versions_and_move(registry):
    registry.add("qa", "v1 {{ q }}")
    registry.add("qa", "v2 {{ q }}")
    registry.tag("qa", 1, "production")
    assert registry.get("qa@production").version == 1
    registry.tag("qa", 2, "production")
    assert registry.get("qa@production").version == 2
    assert registry.tags("qa") == {"production": 2}
    for bad in ("7", "latest", "Prod"):
        with pytest.raises(PromptError, match="tag"):
            registry.tag("qa", 1, bad)


def test_diff_shows_template_and_system_changes(registry):
    registry.add("qa", "Q: {{ question }}\nBe brief.")
    registry.add("qa", "Q: {{ question }}\nBe thorough.", system="You cite sources.")
    diff = registry.diff("qa", 1, 2)
    assert "--- qa@1" in diff and "+++ qa@2" in diff
    assert "-Be brief." in diff and "+Be thorough." in diff
    assert "+[system] You cite sources." in diff


def test_errors_name_the_problem(registry):
    with pytest.raises(PromptError, match="line 2: .*unexpected"):
        registry.add("qa", "fine\n{{ broken }")
    with pytest.raises(PromptError, match="prompt name 'Q A'"):
        registry.add("Q A", "x")
    with pytest.raises(PromptError, match="template is empty"):
        registry.add("qa", "   ")
    with pytest.raises(NotFoundError, match="no prompt named 'ghost'"):
        registry.get("ghost")
    registry.add("qa", "x")
    with pytest.raises(NotFoundError, match="no version 5"):
        registry.get("qa@5")
    with pytest.raises(NotFoundError, match="no tag 'prod'"):
        registry.get("qa@prod")


def test_llm_call_from_a_version_records_it_on_the_span(registry, spans_of):
    version, _ = registry.add(
        "qa", "Context: {{ context }}\nQ: {{ question }}", system="Answer only from the context."
    )
    model = ScriptedChatModel(["Five days."])
    step = version.to_llm_call(input_type=Question, model=model)
    result = step.invoke({"question": "Refund time?", "context": "Refunds take five days."})
    assert result.output == "Five days."
    attributes = spans_of(result.trace_id)["qa"]["attributes"]
    assert attributes["slmops.prompt.version"] == "qa@1"
    assert "Refunds take five days." in attributes["gen_ai.prompt"]
    assert model.calls[0][0].content == "Answer only from the context."


def test_prompt_cli(tmp_path):
    home = tmp_path / "ws"
    template = tmp_path / "qa.j2"
    template.write_text("Q: {{ question }}\n")
    assert (
        "qa@1 stored; variables: question"
        in slmops("prompt", "add", "qa", str(template), "-m", "first", home=home).stdout
    )
    assert "unchanged" in slmops("prompt", "add", "qa", str(template), home=home).stdout
    template.write_text("Question: {{ question }}\n")
    system = tmp_path / "system.j2"
    system.write_text("Be brief.")
    slmops("prompt", "add", "qa", str(template), "--system", str(system), "-m", "reword", home=home)
    assert "Question: {{ question }}" in slmops("prompt", "show", "qa@2", home=home).stdout
    assert "+Question" in slmops("prompt", "diff", "qa", "1", "2", home=home).stdout
    assert slmops("prompt", "tag", "qa", "1", "stable", home=home).returncode == 0
    log = slmops("prompt", "log", "qa", home=home).stdout
    assert "reword" in log and "stable" in log
    assert "stable@1" in slmops("prompt", "list", home=home).stdout
    template.write_text("{{ oops")
    assert_one_line_error(
        slmops("prompt", "add", "qa", str(template), home=home), "template error on line 1"
    )
    assert_one_line_error(
        slmops("prompt", "add", "qa", str(tmp_path / "none.j2"), home=home),
        "cannot read the template file",
    )
