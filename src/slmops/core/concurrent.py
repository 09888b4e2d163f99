"""Concurrent (one input, several branches at once) and Map (one step over many items)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from slmops.core.step import Step
from slmops.core.typing_rules import connection
from slmops.errors import ConcurrentError, StepDefinitionError

if TYPE_CHECKING:
    from slmops.core.graph import GraphBuilder

FailurePolicy = Literal["fail_fast", "wait_all", "collect"]
"""- ``fail_fast``: the first failure cancels the other branches and is raised;
- ``wait_all``: every branch finishes; then all failures are raised as one ConcurrentError;
- ``collect``: failures become :class:`BranchFailure` values in the result, nothing raises."""

POLICIES: tuple[str, ...] = ("fail_fast", "wait_all", "collect")


class BranchFailure(BaseModel):
    """Stands in the result for a branch that failed under the ``collect`` policy."""

    branch: str
    error_type: str
    message: str


async def gather_limited(
    calls: Sequence[Callable[[], Awaitable[Any]]],
    labels: Sequence[str],
    *,
    limit: int | None,
    policy: FailurePolicy,
    path: str,
) -> list[Any]:
    """Run ``calls`` with at most ``limit`` at once; results in the order of ``calls``."""
    semaphore = asyncio.Semaphore(limit or len(calls) or 1)

    async def guarded(call: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await call()

    if policy == "fail_fast":
        async with asyncio.TaskGroup() as group:  # cancels siblings on the first failure
            tasks = [group.create_task(guarded(call)) for call in calls]
        return [task.result() for task in tasks]

    results = await asyncio.gather(*(guarded(call) for call in calls), return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]
    for result in results:  # never swallow cancellation or interpreter exits
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    if policy == "wait_all" and failures:
        summary = "; ".join(f"{type(e).__name__}: {e}" for e in failures)
        raise ConcurrentError(
            f"{len(failures)} of {len(calls)} branches failed: {summary}",
            path=path,
            errors=failures,
        )
    return [
        BranchFailure(branch=label, error_type=type(r).__name__, message=str(r))
        if isinstance(r, Exception)
        else r
        for r, label in zip(results, labels, strict=True)
    ]


def _check_policy(policy: str, limit: int | None, name: str) -> None:
    if policy not in POLICIES:
        raise StepDefinitionError(f"on_error must be one of {POLICIES}, not {policy!r}", path=name)
    if limit is not None and limit < 1:
        raise StepDefinitionError("max_concurrency must be at least 1", path=name)


def _unwrap_task_group(exc: BaseExceptionGroup[Any]) -> BaseException:
    return exc.exceptions[0]


class Concurrent(Step[Any, tuple[Any, ...]]):
    """Give one input to every branch at once; the output is a tuple of their outputs, in
    branch order. ``max_concurrency`` bounds how many run at a time."""

    kind: ClassVar[str] = "concurrent"

    def __init__(
        self,
        name: str,
        branches: Sequence[Step[Any, Any]],
        *,
        input_type: Any = None,
        max_concurrency: int | None = None,
        on_error: FailurePolicy = "fail_fast",
        **options: Any,
    ) -> None:
        branches = tuple(branches)
        if len(branches) < 1:
            raise StepDefinitionError("a Concurrent step needs at least one branch", path=name)
        _check_policy(on_error, max_concurrency, name)
        input_type = input_type if input_type is not None else branches[0].input_type
        converters = []
        for branch in branches:
            problem, converter = connection(input_type, branch.input_type)
            if problem:
                raise StepDefinitionError(
                    f"branch '{branch.name}' cannot take the input: {problem}", path=name
                )
            converters.append(converter)
        outputs = [b.output_type for b in branches]
        if on_error == "collect":
            outputs = [t | BranchFailure for t in outputs]
        self.branches = branches
        self.max_concurrency = max_concurrency
        self.on_error = on_error
        self._converters = tuple(converters)
        output_type: Any = tuple[tuple(outputs)]  # type: ignore[misc]  # types known at run time
        super().__init__(name, input_type=input_type, output_type=output_type, **options)

    def children(self) -> Sequence[Step[Any, Any]]:
        return self.branches

    def span_attributes(self) -> dict[str, Any]:
        return {
            "slmops.concurrent.policy": self.on_error,
            "slmops.concurrent.limit": self.max_concurrency or 0,
        }

    async def _execute(self, value: Any) -> tuple[Any, ...]:
        def call_for(branch: Step[Any, Any], convert: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: branch._invoke(convert(value) if convert else value)

        calls = [call_for(b, c) for b, c in zip(self.branches, self._converters, strict=True)]
        try:
            results = await gather_limited(
                calls,
                [b.name for b in self.branches],
                limit=self.max_concurrency,
                policy=self.on_error,
                path=self.name,
            )
        except BaseExceptionGroup as group:
            raise _unwrap_task_group(group) from None
        return tuple(results)

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        limit = f" (max {self.max_concurrency})" if self.max_concurrency else ""
        fork = builder.node(f"{self.name}\nfan-out{limit}", "fork")
        join = builder.node(f"join\n{self.on_error}", "fork")
        for branch in self.branches:
            entries, exits = builder.add(branch)
            for target in entries:
                builder.edge(fork, target)
            for source in exits:
                builder.edge(source, join)
        return [fork], [join]


class Map(Step[list[Any], list[Any]]):
    """Run one step over every item of a list input, concurrently; outputs keep item order."""

    kind: ClassVar[str] = "map"

    def __init__(
        self,
        name: str,
        step: Step[Any, Any],
        *,
        max_concurrency: int | None = 4,
        on_error: FailurePolicy = "fail_fast",
        **options: Any,
    ) -> None:
        _check_policy(on_error, max_concurrency, name)
        item_out = step.output_type | BranchFailure if on_error == "collect" else step.output_type
        self.step = step
        self.max_concurrency = max_concurrency
        self.on_error = on_error
        input_type: Any = list[step.input_type]  # type: ignore[name-defined]  # known at run time
        output_type: Any = list[item_out]  # type: ignore[valid-type]
        super().__init__(name, input_type=input_type, output_type=output_type, **options)

    def children(self) -> Sequence[Step[Any, Any]]:
        return (self.step,)

    async def _execute(self, value: list[Any]) -> list[Any]:
        calls = [lambda item=item: self.step._invoke(item) for item in value]
        try:
            return await gather_limited(
                calls,
                [f"{self.step.name}[{i}]" for i in range(len(value))],
                limit=self.max_concurrency,
                policy=self.on_error,
                path=self.name,
            )
        except BaseExceptionGroup as group:
            raise _unwrap_task_group(group) from None

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        fork = builder.node(f"{self.name}\nfor each item (max {self.max_concurrency})", "fork")
        join = builder.node("collect", "fork")
        entries, exits = builder.add(self.step)
        for target in entries:
            builder.edge(fork, target, label="item")
        for source in exits:
            builder.edge(source, join)
        return [fork], [join]
