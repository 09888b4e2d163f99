"""Retries, timeouts and fallbacks, as options of any step."""

from __future__ import annotations

import asyncio
import time

import pytest

from slmops.core import Chain, Function, Retry
from slmops.errors import StepDefinitionError, StepExecutionError, StepTimeoutError


class Flaky:
    def __init__(self, failures: int, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return x * 10


def flaky_step(flaky: Flaky, **options) -> Function:
    return Function(flaky, name="flaky", input_type=int, output_type=int, **options)


def test_retry_succeeds_after_transient_failures(spans_of):
    flaky = Flaky(failures=2)
    step = flaky_step(
        flaky,
        retry=Retry(attempts=3, backoff_s=0.01),
    )
    result = step.invoke(4)
    assert result.output == 40 and flaky.calls == 3
    span = spans_of(result.trace_id)["flaky"]
    retries = [e for e in span["events"] if e["name"] == "retry"]
    assert [e["attributes"]["attempt"] for e in retries] == [1, 2]
    assert "ConnectionError: failure 1" in retries[0]["attributes"]["error"]
    assert span["attributes"]["slmops.attempts"] == 3


def test_retry_gives_up_after_the_configured_attempts():
    flaky = Flaky(failures=5)
    step = flaky_step(flaky, retry=2)
    with pytest.raises(StepExecutionError, match="ConnectionError: failure 2"):
        step.with_options(retry=Retry(attempts=2, backoff_s=0)).run(1)
    assert flaky.calls == 2


def test_retry_only_on_the_listed_exceptions():
    flaky = Flaky(failures=1, exc=ValueError)
    step = flaky_step(
        flaky,
        retry=Retry(attempts=3, backoff_s=0, on=(ConnectionError,)),
    )
    with pytest.raises(StepExecutionError, match="ValueError"):
        step.run(1)
    assert flaky.calls == 1


def test_backoff_waits_between_attempts():
    flaky = Flaky(failures=2)
    step = flaky_step(
        flaky,
        retry=Retry(attempts=3, backoff_s=0.05, max_backoff_s=1),
    )
    started = time.perf_counter()
    step.run(1)
    assert time.perf_counter() - started >= 0.05 + 0.1 - 0.01  # 0.05 then 0.10


def test_timeout_stops_a_slow_async_step():
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    started = time.perf_counter()
    with pytest.raises(StepTimeoutError, match="step 'slow': did not finish within 0.05 s"):
        Function(slow, timeout_s=0.05).run(1)
    assert time.perf_counter() - started < 1


def test_timeout_also_bounds_blocking_sync_functions():
    def blocking(x: int) -> int:
        time.sleep(0.5)
        return x

    started = time.perf_counter()
    with pytest.raises(StepTimeoutError):
        Function(blocking, timeout_s=0.05).run(1)
    assert time.perf_counter() - started < 0.4


def test_timeouts_are_retried_when_asked():
    attempts = []

    async def sometimes_slow(x: int) -> int:
        attempts.append(x)
        await asyncio.sleep(1 if len(attempts) == 1 else 0)
        return x

    step = Function(sometimes_slow, timeout_s=0.05, retry=Retry(attempts=2, backoff_s=0))
    assert step.run(3) == 3 and len(attempts) == 2


def test_fallback_runs_when_the_step_fails(spans_of):
    def primary(x: int) -> str:
        raise RuntimeError("primary down")

    def backup(x: int) -> str:
        return f"backup {x}"

    step = Function(primary, fallback=Function(backup), retry=Retry(attempts=2, backoff_s=0))
    result = step.invoke(7)
    assert result.output == "backup 7"
    spans = spans_of(result.trace_id)
    assert spans["primary"]["attributes"]["slmops.fallback.used"] == "backup"
    assert spans["primary"]["status"] == "ok"
    assert spans["backup"]["parent_id"] == spans["primary"]["span_id"]
    fallback_events = [e for e in spans["primary"]["events"] if e["name"] == "fallback"]
    assert "primary down" in fallback_events[0]["attributes"]["error"]


def test_fallback_must_fit_the_step():
    def to_int(x: int) -> int:
        return x

    def to_str(x: int) -> str:
        return str(x)

    with pytest.raises(StepDefinitionError, match="fallback 'to_str' does not fit"):
        Function(to_int, fallback=Function(to_str))


def test_options_work_on_composite_steps():
    flaky = Flaky(failures=1)
    inner = flaky_step(flaky)
    chain = Chain("c", [inner], retry=Retry(attempts=2, backoff_s=0))
    assert chain.run(2) == 20 and flaky.calls == 2


def test_bad_option_values_are_refused():
    with pytest.raises(StepDefinitionError, match="timeout_s must be a positive"):
        Function(Flaky(0), name="f", input_type=int, output_type=int, timeout_s=0)
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        Retry(attempts=0)
