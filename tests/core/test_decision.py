from __future__ import annotations

from typing import Literal

import pytest

from slmops.core import Decision, Function
from slmops.errors import RoutingError, StepDefinitionError


def small(x: int) -> str:
    return f"small {x}"


def large(x: int) -> str:
    return f"large {x}"


def by_size(x: int) -> Literal["small", "large"]:
    return "small" if x < 10 else "large"


def test_routes_to_the_chosen_branch_and_records_it(spans_of):
    step = Decision("size", by_size, {"small": Function(small), "large": Function(large)})
    assert step.run(3) == "small 3"
    result = step.invoke(30)
    assert result.output == "large 30"
    spans = spans_of(result.trace_id)
    assert spans["size"]["attributes"]["slmops.decision.branch"] == "large"
    assert "small" not in spans  # the other branch never ran


def test_literal_router_must_match_the_branches():
    with pytest.raises(StepDefinitionError, match=r"router returns \['large', 'small'\]"):
        Decision("size", by_size, {"small": Function(small), "medium": Function(large)})


def test_unknown_key_at_run_time_is_a_routing_error():
    step = Decision("d", lambda x: "nowhere", {"small": Function(small)}, input_type=int)
    with pytest.raises(RoutingError, match="router returned 'nowhere'"):
        step.run(1)


def test_branches_must_accept_the_input():
    def text_only(s: str) -> str:
        return s

    with pytest.raises(StepDefinitionError, match="branch 'b' cannot take the input"):
        Decision("d", lambda x: "a", {"a": Function(small), "b": Function(text_only)})


def test_output_type_is_the_union_of_branch_outputs():
    def as_int(x: int) -> int:
        return x

    step = Decision("d", lambda x: "s" if x else "i", {"s": Function(small), "i": Function(as_int)})
    assert step.output_type == str | int
    assert step.run(0) == 0 and step.run(1) == "small 1"
