"""Fuzzing prompt templates (Jinja2): a stored version that builds and renders, or
PromptError before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmops.errors import StepDefinitionError, StepInputError
from slmops.prompts.registry import PromptError, PromptRegistry, PromptVersion, template_variables
from slmops.store import Workspace
from tests.fuzz.support import NAMES, ODD_TEXT, parses_or_fails

TOKENS = st.one_of(
    st.sampled_from(
        [
            "{{ ",
            " }}",
            "{% ",
            " %}",
            "{# ",
            " #}",
            "{{ question }}",
            "{{ input }}",
            "{{ passages }}",
            "{% for p in passages %}",
            "{% endfor %}",
            "{% if question %}",
            "{% else %}",
            "{% endif %}",
            "{% raw %}",
            "{% endraw %}",
            "{% set x = 1 %}",
            "{% macro m() %}",
            "{% endmacro %}",
            "{% include 'x' %}",
            "{% extends 'x' %}",
            "{% block b %}",
            "{% endblock %}",
            "question",
            "|upper",
            "|nosuchfilter",
            "|int",
            " is nosuchtest",
            "(",
            ")",
            "[",
            "]",
            "1 / 0",
            "1 // 0",
            "'a' ~ 1",
            "1 + 'a'",
            "'x' * 3",
            "range(5)",
            "().__class__",
            "question.__class__.__mro__",
            "lipsum",
            "{{ question|join(',') }}",
            "\n",
            " ",
        ]
    ),
    ODD_TEXT,
    st.text(max_size=5),
)
TEMPLATES = st.lists(TOKENS, max_size=10).map("".join)
VALUES = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.lists(st.text(max_size=5), max_size=3),
    st.none(),
)


def _check_version(version: PromptVersion, value: Any) -> None:
    """A stored version builds an LLM call that renders any input or says why not."""
    call = parses_or_fails(version.to_llm_call, input_type=dict, error=StepDefinitionError)
    assert not isinstance(call, StepDefinitionError), f"stored, yet does not build: {call}"
    parses_or_fails(call.render, value, error=StepInputError)


@given(
    TEMPLATES,
    st.one_of(st.none(), TEMPLATES),
    NAMES,
    st.dictionaries(st.sampled_from(["question", "input", "passages", "x"]), VALUES),
)
@example("{{ x|nosuchfilter }}", None, "fuzz", {})  # was stored, then failed to build
@example("{{ x }}", "{% if a is nosuchtest %}{% endif %}", "fuzz", {})
@example("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", None, "fuzz", {})  # was RecursionError
@example("{% if a %}" * 1000 + "{% endif %}" * 1000, None, "fuzz", {})
@example("{{ 1 / 0 }}", None, "fuzz", {})  # was ZeroDivisionError from render
@example("{{ question + 1 }}", None, "fuzz", {"question": "a"})  # was TypeError from render
@example("{{ 'a' * 100000000000 }}", None, "fuzz", {})
@example("{{ x }}", None, "fuzz\n", {})
def test_templates(
    workspace: Workspace, template: str, system: str | None, name: str, value: dict[str, Any]
) -> None:
    parses_or_fails(template_variables, template, "fuzz", error=PromptError)
    registry = PromptRegistry(workspace)
    before = {n: len(registry.log(n)) for n in registry.names()}
    result = parses_or_fails(registry.add, name, template, system=system, error=PromptError)
    if isinstance(result, PromptError):
        assert {n: len(registry.log(n)) for n in registry.names()} == before, str(result)
        return
    version, _ = result
    assert registry.get(version.ref) == version
    _check_version(version, value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ x|nosuchfilter }}",  # was stored, then no LLM call could be built from it
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "{% if a %}" * 1000 + "{% endif %}" * 1000,
    ],
)
def test_templates_that_cannot_be_used_are_not_stored(workspace: Workspace, template: str) -> None:
    error = parses_or_fails(PromptRegistry(workspace).add, "qa", template, error=PromptError)
    assert isinstance(error, PromptError) and "prompt 'qa'" in str(error), error
    assert PromptRegistry(workspace).names() == []


@pytest.mark.parametrize(
    ("template", "value"),
    [("{{ 1 / 0 }}", {}), ("{{ question + 1 }}", {"question": "a"}), ("{{ 'a' * 10**12 }}", {})],
)
def test_render_errors_are_step_input_errors(
    workspace: Workspace, template: str, value: dict[str, Any]
) -> None:
    version, _ = PromptRegistry(workspace).add("qa", template)
    call = version.to_llm_call(input_type=dict)
    error = parses_or_fails(call.render, value, error=StepInputError)
    assert isinstance(error, StepInputError) and "prompt cannot be rendered" in str(error), error
