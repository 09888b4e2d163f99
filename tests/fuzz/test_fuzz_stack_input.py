"""Fuzzing what people type to run a stack: the input (text, or a JSON object for stacks with
several fields) and ``--set KEY=VALUE`` / ``--model ALIAS=URI`` overrides."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from slmops.apps.stack import parse_stack_input
from slmops.cli.stacks import model_overrides, setting_overrides
from slmops.errors import ConfigError
from tests.fuzz.support import (
    ODD_TEXT,
    deeply_nested_json,
    json_values,
    jsonl_line,
    parses_or_fails,
)

HOSTILE_JSON = st.sampled_from(
    [
        "{",
        "{}",
        '{"question": "a"}',
        '{"a": NaN}',
        '{"a": ' + "1" * 5000 + "}",  # was ValueError (not JSONDecodeError) from json.loads
        '{"a": ' + deeply_nested_json(100_000) + "}",  # was RecursionError
        '{"a": 1} trailing',
        " {",
        "\ufeff{}",
    ]
)
INPUTS = st.one_of(
    HOSTILE_JSON,
    st.dictionaries(st.text(max_size=8), json_values(), max_size=4).map(jsonl_line),
    ODD_TEXT,
    st.text(max_size=40),
)


@given(INPUTS)
@example('{"a": ' + "1" * 5000 + "}")
@example('{"a": ' + deeply_nested_json(100_000) + "}")
def test_stack_input(text: str) -> None:
    result = parses_or_fails(parse_stack_input, text, error=ConfigError)
    if not isinstance(result, ConfigError) and not text.lstrip().startswith("{"):
        assert result == text


PAIRS = st.one_of(
    st.tuples(
        st.sampled_from(["answer", "k", "", " ", "a=b", "settings.x"]),
        st.sampled_from(["=", "", "=="]),
        st.one_of(HOSTILE_JSON, INPUTS, st.sampled_from(["true", "1", "[1,", "null", "1e999"])),
    ).map("".join),
    st.text(max_size=20),
)


@given(st.lists(PAIRS, max_size=4))
@example(["k=" + "1" * 5000])  # was ValueError
@example(["k=" + deeply_nested_json(100_000)])  # was RecursionError
def test_setting_overrides(pairs: list[str]) -> None:
    result: Any = parses_or_fails(setting_overrides, pairs, error=ConfigError)
    if isinstance(result, dict):
        assert len(result) <= len(pairs)


@given(st.lists(PAIRS, max_size=4))
def test_model_overrides(pairs: list[str]) -> None:
    parses_or_fails(model_overrides, pairs, error=ConfigError)


def test_json_that_python_cannot_read_is_text_or_an_error() -> None:
    """Regression: json.loads raises ValueError (not JSONDecodeError) for an integer over
    4300 digits, and RecursionError for deep nesting; both escaped as tracebacks."""
    huge = "1" * 5000
    assert setting_overrides([f"k={huge}"]) == {"k": huge}
    for text in ('{"a": ' + huge + "}", '{"a": ' + deeply_nested_json(100_000) + "}"):
        error = parses_or_fails(parse_stack_input, text, error=ConfigError)
        assert isinstance(error, ConfigError) and "input looks like JSON" in str(error)
