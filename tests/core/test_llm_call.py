from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from slmops.core import Chain, Function, LLMCall
from slmops.core.llm_call import extract_json
from slmops.errors import StepDefinitionError, StepInputError, StepOutputError
from slmops.models import GenerationParams
from tests.fakes import ScriptedChatModel


class Question(BaseModel):
    question: str


class City(BaseModel):
    city: str
    # bounded: LLGuidance stops the digits there, where a 135M model left free may write them
    # until max_tokens (whether it stopped was chance, moved by any change of rounding)
    population_millions: float = Field(ge=0, le=100_000)


def test_prompt_is_rendered_from_input_fields_and_recorded(spans_of):
    model = ScriptedChatModel(["Paris."])
    step = LLMCall(
        "ask",
        model=model,
        system="Be brief.",
        prompt="Q: {{ question }}",
        input_type=Question,
        prompt_version="qa@3",
    )
    result = step.invoke({"question": "Capital of France?"})
    assert result.output == "Paris."
    [messages] = model.calls
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "Q: Capital of France?"),
    ]
    span = spans_of(result.trace_id)["ask"]["attributes"]
    assert span["gen_ai.operation.name"] == "chat"
    assert span["gen_ai.request.model"] == "fake:scripted"
    assert span["gen_ai.usage.input_tokens"] == 10
    assert span["gen_ai.usage.output_tokens"] == 1
    assert span["slmops.prompt.version"] == "qa@3"
    assert "Capital of France?" in span["gen_ai.prompt"]
    assert span["slmops.llm.response"] == "Paris."


def test_structured_output_is_parsed_and_validated():
    model = ScriptedChatModel(
        ['Sure! {"city": "Paris", "population_millions": 2.1} Hope it helps.']
    )
    step = LLMCall("city", model=model, prompt="{{ input }}", input_type=str, output_type=City)
    assert step.run("capital of France") == City(city="Paris", population_millions=2.1)
    assert model.schemas[0]["properties"]["city"]["type"] == "string"  # constrained decoding asked
    assert "JSON schema" in model.calls[0][-1].content


def test_invalid_structured_reply_is_sent_back_and_retried(spans_of):
    model = ScriptedChatModel(
        [
            '{"city": "Paris", "population_millions": -1}',
            '{"city": "Paris", "population_millions": 2.1}',
        ]
    )
    step = LLMCall("city", model=model, prompt="{{ input }}", input_type=str, output_type=City)
    result = step.invoke("capital of France")
    assert result.output.population_millions == 2.1
    assert len(model.calls) == 2
    feedback = model.calls[1][-1].content
    assert "population_millions" in feedback and "greater than or equal to 0" in feedback
    attributes = spans_of(result.trace_id)["city"]["attributes"]
    assert attributes["slmops.llm.calls"] == 2
    assert attributes["gen_ai.usage.input_tokens"] == 20


def test_structured_reply_that_never_parses_fails_with_the_field():
    model = ScriptedChatModel(['{"town": "Paris"}'])
    step = LLMCall(
        "city", model=model, prompt="{{ input }}", input_type=str, output_type=City, parse_retries=1
    )
    with pytest.raises(StepOutputError, match="did not parse after 2 tries: field 'city'"):
        step.run("x")
    assert len(model.calls) == 2


def test_missing_template_variable_is_an_input_error():
    step = LLMCall("ask", model=ScriptedChatModel(["x"]), prompt="{{ topic }}", input_type=Question)
    with pytest.raises(StepInputError, match="'topic' is undefined"):
        step.run({"question": "q"})


def test_broken_template_is_refused_at_construction():
    with pytest.raises(StepDefinitionError, match="prompt template does not parse"):
        LLMCall("ask", model=ScriptedChatModel(["x"]), prompt="{{ oops", input_type=str)


def test_cache_key_includes_model_and_sampling_settings():
    model = ScriptedChatModel(["a", "b", "c"])
    cold = LLMCall("ask", model=model, prompt="{{ input }}", input_type=str, cache=True)
    assert cold.run("q") == "a"
    assert cold.run("q") == "a"  # cached
    warmer = cold.__class__(
        "ask",
        model=model,
        prompt="{{ input }}",
        input_type=str,
        cache=True,
        params=GenerationParams(temperature=0.7),
    )
    assert warmer.run("q") == "b"  # other params, other key
    assert len(model.calls) == 2


def test_extract_json_finds_embedded_objects():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json("text [1, 2] more") == [1, 2]
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("no json here")


@pytest.mark.model
def test_llm_call_on_the_shipped_model_with_structured_output(spans_of):
    ask = LLMCall(
        "capital",
        prompt="What is the capital city of {{ input }}?",
        input_type=str,
        output_type=City,
        params=GenerationParams(max_tokens=48),
    )
    chain = Chain("geo", [Function(str.strip, name="strip", input_type=str, output_type=str), ask])
    result = chain.invoke("  France ")
    assert isinstance(result.output, City)
    assert "paris" in result.output.city.lower()
    spans = spans_of(result.trace_id)
    assert spans["capital"]["attributes"]["gen_ai.usage.output_tokens"] > 0


def test_a_json_reply_cut_off_inside_a_string_is_closed_and_nothing_else_is_guessed():
    from slmops.core.llm_call import close_truncated_json

    cut = '{"name": "Ana", "request": "send the invoice, please, please, ple'
    assert close_truncated_json(cut) == cut + '"}'
    assert close_truncated_json('{"a": "x\\') == '{"a": "x"}'  # a dangling escape is dropped
    assert close_truncated_json('{"a": "x\\\\') == '{"a": "x\\\\"}'  # an escaped backslash stays
    assert close_truncated_json('{"a": {"b": "c"}, ') == '{"a": {"b": "c"}}'
    assert close_truncated_json('{"items": ["a", "b') == '{"items": ["a", "b"]}'
    for unknowable in ('{"a": [1, 2', '{"a": tru', '{"a": 1, "b":', "plain", '{"a": 1}'):
        assert close_truncated_json(unknowable) is None, unknowable
