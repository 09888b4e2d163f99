from __future__ import annotations

import asyncio

import pytest

from slmops.core import BranchFailure, Concurrent, Function, Map
from slmops.errors import ConcurrentError, StepDefinitionError, StepExecutionError


def make_branch(name: str, delay: float, fail: bool = False, log: list[str] | None = None):
    async def body(x: int) -> int:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if log is not None:
                log.append(f"{name} cancelled")
            raise
        if fail:
            raise RuntimeError(f"{name} failed")
        if log is not None:
            log.append(f"{name} done")
        return x + len(name)

    return Function(body, name=name)


def test_results_keep_branch_order_not_finish_order():
    step = Concurrent("fan", [make_branch("slow", 0.05), make_branch("f", 0.0)])
    assert step.run(1) == (5, 2)


def test_concurrency_limit_is_respected():
    running = {"now": 0, "max": 0}

    async def tracked(x: int) -> int:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1
        return x

    branches = [Function(tracked, name=f"b{i}") for i in range(6)]
    assert Concurrent("limited", branches, max_concurrency=2).run(7) == (7,) * 6
    assert running["max"] == 2


def test_fail_fast_cancels_the_other_branches():
    log: list[str] = []
    step = Concurrent(
        "ff",
        [make_branch("bad", 0.0, fail=True), make_branch("long", 1.0, log=log)],
        on_error="fail_fast",
    )
    with pytest.raises(StepExecutionError, match="bad failed"):
        step.run(0)
    assert log == ["long cancelled"]


def test_wait_all_finishes_every_branch_then_reports_all_failures():
    log: list[str] = []
    step = Concurrent(
        "wa",
        [
            make_branch("bad1", 0.0, fail=True),
            make_branch("ok", 0.02, log=log),
            make_branch("bad2", 0.01, fail=True),
        ],
        on_error="wait_all",
    )
    with pytest.raises(ConcurrentError, match="2 of 3 branches failed") as info:
        step.run(0)
    assert log == ["ok done"]
    assert len(info.value.errors) == 2


def test_collect_returns_failures_in_place(spans_of):
    step = Concurrent(
        "col", [make_branch("bad", 0.0, fail=True), make_branch("ok", 0.0)], on_error="collect"
    )
    result = step.invoke(1)
    failure, value = result.output
    assert isinstance(failure, BranchFailure) and failure.branch == "bad"
    assert "bad failed" in failure.message
    assert value == 3
    spans = spans_of(result.trace_id)
    assert spans["bad"]["status"] == "error" and spans["col"]["status"] == "ok"


def test_unknown_policy_and_bad_limit_are_refused():
    with pytest.raises(StepDefinitionError, match="on_error must be one of"):
        Concurrent("x", [make_branch("a", 0)], on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(StepDefinitionError, match="max_concurrency"):
        Concurrent("x", [make_branch("a", 0)], max_concurrency=0)


def test_map_runs_one_step_over_items_in_order():
    step = Map("each", make_branch("ab", 0.0), max_concurrency=3)
    assert step.run([1, 2, 3]) == [3, 4, 5]
    assert step.run([]) == []
