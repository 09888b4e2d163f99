"""Decision: route the input to one of several branches."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args, get_origin

from opentelemetry import trace as otel_trace

from slmops.core.step import Step
from slmops.core.typing_rules import connection
from slmops.errors import RoutingError, StepDefinitionError

if TYPE_CHECKING:
    from slmops.core.graph import GraphBuilder

Router = Callable[[Any], Any]


def _router_keys(router: Router) -> tuple[str, ...] | None:
    """The keys a router declares through a ``Literal[...]`` return annotation, if any."""
    try:
        returned = typing.get_type_hints(router).get("return")
    except (NameError, TypeError):
        return None
    if get_origin(returned) is Literal:
        return tuple(str(arg) for arg in get_args(returned))
    return None


class Decision(Step[Any, Any]):
    """``router(input)`` returns a branch key; the matching branch runs on the same input.
    A router annotated ``-> Literal["a", "b"]`` must name exactly the branch keys, so the
    routing and the drawn graph cannot disagree."""

    kind: ClassVar[str] = "decision"
    shape: ClassVar[str] = "diamond"

    def __init__(
        self,
        name: str,
        router: Router,
        branches: Mapping[str, Step[Any, Any]],
        *,
        input_type: Any = None,
        **options: Any,
    ) -> None:
        if not branches:
            raise StepDefinitionError("a Decision needs at least one branch", path=name)
        if not callable(router):
            raise StepDefinitionError("router must be callable", path=name)
        declared = _router_keys(router)
        if declared is not None and set(declared) != set(branches):
            raise StepDefinitionError(
                f"router returns {sorted(declared)} but the branches are {sorted(branches)}",
                path=name,
            )
        first = next(iter(branches.values()))
        input_type = input_type if input_type is not None else first.input_type
        converters = {}
        for key, branch in branches.items():
            problem, converter = connection(input_type, branch.input_type)
            if problem:
                raise StepDefinitionError(
                    f"branch '{key}' cannot take the input: {problem}", path=name
                )
            converters[key] = converter
        outputs = list(dict.fromkeys(b.output_type for b in branches.values()))
        self.router = router
        self.branches = dict(branches)
        self._converters = converters
        self._router_is_async = inspect.iscoroutinefunction(router)
        super().__init__(name, input_type=input_type, output_type=reduce(or_, outputs), **options)

    def children(self) -> Sequence[Step[Any, Any]]:
        return tuple(self.branches.values())

    async def _execute(self, value: Any) -> Any:
        key = await self.router(value) if self._router_is_async else self.router(value)
        if key not in self.branches:
            raise RoutingError(
                f"router returned {key!r}; branches are {sorted(self.branches)}", path=self.name
            )
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.decision.branch", str(key))
        span.add_event("route", {"branch": str(key)})
        convert = self._converters[key]
        return await self.branches[key]._invoke(convert(value) if convert else value)

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        router_name = getattr(self.router, "__name__", "router")
        return builder.branches(f"{self.name}\nrouter: {router_name}", self.branches)
