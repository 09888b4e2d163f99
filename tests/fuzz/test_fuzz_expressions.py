"""Fuzzing the expressions people type: regression gates (``faithfulness>=0.7``), alert rules
(``refusal_rate > 0.5 for 15m``), durations and notify targets."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import func, select

from slmops.eval.gates import Gate, GateError, check_gates, parse_gate
from slmops.monitor.alerts import (
    AlertRuleError,
    RuleSpec,
    add_rule,
    format_duration,
    parse_duration,
    parse_rule,
    validate_notify,
)
from slmops.store import Workspace
from slmops.store.schema import alert_rules
from tests.fuzz.support import ODD_TEXT, parses_or_fails

NUMBERS = st.one_of(
    st.sampled_from(
        ["0", "0.7", ".5", "-1", "1e3", "inf", "nan", "1_000", "\u0661", "9" * 400, "0x10"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)
SPACE = st.sampled_from(["", " ", "  ", "\t", "\n"])
OPERATORS = st.sampled_from([">=", "<=", ">", "<", "==", "=", "!=", "=>", ">>", ""])


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


# --- gates ----------------------------------------------------------------------------------

FIGURES = st.sampled_from(
    ["faithfulness", "token_f1[squad]", "judge@2", "p95_latency_ms", "a[", "x]", "", "é", "a b"]
)
GATES = st.one_of(
    _joined(SPACE, FIGURES, SPACE, OPERATORS, SPACE, NUMBERS, SPACE),
    ODD_TEXT,
    st.text(max_size=30),
)


@given(GATES)
@example("faithfulness>=" + "9" * 400)  # was accepted as threshold inf
@example("x>=1\n")
def test_gates(text: str) -> None:
    result = parses_or_fails(parse_gate, text, error=GateError)
    if isinstance(result, Gate):
        assert math.isfinite(result.threshold)
        str(result)
        summary = {"cases": 3, "metrics": {result.figure: {"mean": 0.5}}}
        for outcome in parses_or_fails(check_gates, [result], summary, error=GateError):
            outcome.describe()


def test_gate_threshold_must_be_finite() -> None:
    error = parses_or_fails(parse_gate, "faithfulness>=" + "9" * 400, error=GateError)
    assert isinstance(error, GateError) and "threshold" in str(error), error


# --- alert rules ------------------------------------------------------------------------------

KNOWN = ["refusal_rate", "error_rate", "p95_latency_ms", "feedback.up"]
DURATIONS = st.one_of(
    _joined(NUMBERS, st.sampled_from(["s", "m", "h", "d", "", "ms", "M", "w"])),
    st.sampled_from(["15m", "0s", "0.5s", "1.5h", "9" * 400 + "d", "1e400s", "", "m", "\u0663m"]),
)
RULES = st.one_of(
    _joined(
        SPACE,
        st.sampled_from([*KNOWN, "refusal", "unknown", "x.y:z", "1x"]),
        SPACE,
        OPERATORS,
        SPACE,
        NUMBERS,
        st.lists(
            _joined(
                st.just(" "),
                st.sampled_from(["for", "over", "FOR", "every", ""]),
                st.just(" "),
                DURATIONS,
            ),
            max_size=3,
        ).map("".join),
    ),
    ODD_TEXT,
    st.text(max_size=30),
)


def _usable(spec: RuleSpec) -> None:
    """What the CLI and the evaluator do with a parsed rule must work."""
    assert math.isfinite(spec.threshold)
    assert math.isfinite(spec.for_s) and spec.for_s >= 0
    assert math.isfinite(spec.window_s) and spec.window_s > 0
    format_duration(spec.for_s)
    format_duration(spec.window_s)
    spec.breached(None)
    spec.breached(spec.threshold)


@given(RULES)
@example(
    "refusal_rate > 0.5 for " + "9" * 400 + "d"
)  # was inf: format_duration raised OverflowError
@example("refusal_rate > 0.5 over " + "9" * 400 + "s")
@example("refusal_rate > 0.5 for 15m for 1h")
def test_rules(expression: str) -> None:
    result = parses_or_fails(parse_rule, expression, KNOWN, error=AlertRuleError)
    if isinstance(result, RuleSpec):
        _usable(result)


@given(DURATIONS)
@example("9" * 400 + "d")
def test_durations(text: str) -> None:
    result = parses_or_fails(parse_duration, text, error=AlertRuleError)
    if isinstance(result, float):
        assert math.isfinite(result) and result >= 0
        format_duration(result)


def test_durations_must_be_finite() -> None:
    """Regression: a 400-digit duration was inf; showing the rule raised OverflowError."""
    for text in ("9" * 400 + "d", "9" * 400 + "s"):
        error = parses_or_fails(parse_duration, text, error=AlertRuleError)
        assert isinstance(error, AlertRuleError) and "too long" in str(error), error


TARGETS = st.one_of(
    _joined(
        st.sampled_from(["webhook:", "webhook: ", "log", "hook:", ""]),
        st.sampled_from(["http://", "https://", "ftp://", "", "http:///"]),
        st.sampled_from(
            ["example.com", "[::1]", "[::1", "h:99999", "h:-1", "\u2100", "xn--", "a b", ""]
        ),
        st.sampled_from(["", "/alerts", "?q=1", "#x", "/\x00"]),
    ),
    ODD_TEXT,
    st.text(max_size=20),
)


@given(st.lists(TARGETS, max_size=3))
@example(["webhook:http://xn--/alerts"])  # was idna.IDNAError from httpx.URL.host
def test_notify_targets(targets: list[str]) -> None:
    result = parses_or_fails(validate_notify, targets, error=AlertRuleError)
    if isinstance(result, list):
        assert result[0] == "log" and len(set(result)) == len(result)


@given(RULES, st.lists(TARGETS, max_size=2))
def test_adding_rules_stores_nothing_on_error(
    workspace: Workspace, expression: str, targets: list[str]
) -> None:
    with workspace.engine.connect() as connection:
        before = connection.execute(select(func.count()).select_from(alert_rules)).scalar_one()
    result = parses_or_fails(
        add_rule, workspace.engine, "demo", expression, targets, KNOWN, error=AlertRuleError
    )
    with workspace.engine.connect() as connection:
        after = connection.execute(select(func.count()).select_from(alert_rules)).scalar_one()
    assert after == before + (0 if isinstance(result, AlertRuleError) else 1)
