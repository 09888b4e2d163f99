from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmops.core import Chain, Function
from slmops.errors import StepDefinitionError, StepInputError


class Raw(BaseModel):
    text: str


class Cleaned(BaseModel):
    text: str
    length: int


class Summary(BaseModel):
    text: str


def clean(raw: Raw) -> Cleaned:
    text = raw.text.strip()
    return Cleaned(text=text, length=len(text))


def shout(summary: Summary) -> str:
    return summary.text.upper()


def count(n: int) -> int:
    return n


def test_chain_runs_in_order_and_converts_compatible_models():
    chain = Chain("pipeline", [Function(clean), Function(shout)])
    # Cleaned has Summary's only field (text: str), so it feeds Summary field by field.
    assert chain.run({"text": "  hi  "}) == "HI"
    assert (chain.input_type, chain.output_type) == (Raw, str)


def test_mismatched_types_are_refused_at_construction():
    with pytest.raises(
        StepDefinitionError, match="output of 'shout' does not fit input of 'count'"
    ):
        Chain("bad", [Function(shout), Function(count)])


class NeedsScore(BaseModel):
    text: str
    score: float


class LengthAsText(BaseModel):
    length: str


def test_missing_field_is_named():
    def use(x: NeedsScore) -> str:
        return x.text

    with pytest.raises(StepDefinitionError, match="needs field 'score'"):
        Chain("bad", [Function(clean), Function(use)])


def test_same_field_different_type_is_refused():
    def use(x: LengthAsText) -> str:
        return x.length

    with pytest.raises(StepDefinitionError, match="field 'length' is int in Cleaned but str"):
        Chain("bad", [Function(clean), Function(use)])


def test_chain_validates_input_before_running_any_step():
    calls = []

    def record(raw: Raw) -> Raw:
        calls.append(raw)
        return raw

    with pytest.raises(StepInputError, match="step 'c': input field 'text'"):
        Chain("c", [Function(record)]).run({"txt": "x"})
    assert calls == []


def test_nested_spans_have_parents_and_paths(spans_of):
    inner = Chain("inner", [Function(clean)])
    outer = Chain("outer", [inner, Function(shout)])
    result = outer.invoke({"text": "a"})
    spans = spans_of(result.trace_id)
    assert spans["outer"]["parent_id"] is None
    assert spans["inner"]["parent_id"] == spans["outer"]["span_id"]
    assert spans["clean"]["parent_id"] == spans["inner"]["span_id"]
    assert spans["clean"]["attributes"]["slmops.step.path"] == "outer/inner/clean"


def test_rshift_builds_a_chain():
    chain = Function(clean) >> Function(shout)
    assert chain.run({"text": "x"}) == "X"


def test_empty_chain_is_refused():
    with pytest.raises(StepDefinitionError, match="at least one step"):
        Chain("empty", [])
