"""Chain: steps run in sequence, each output feeding the next input."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from slmops.core.step import Step
from slmops.core.typing_rules import Converter, connection
from slmops.errors import StepDefinitionError

if TYPE_CHECKING:
    from slmops.core.graph import GraphBuilder


class Chain(Step[Any, Any]):
    """Run ``steps`` in order. Built only if every output fits the next step's input
    (checked now, not at run time)."""

    kind: ClassVar[str] = "chain"

    def __init__(self, name: str, steps: Sequence[Step[Any, Any]], **options: Any) -> None:
        steps = tuple(steps)
        if not steps:
            raise StepDefinitionError("a chain needs at least one step", path=name)
        for step in steps:
            if not isinstance(step, Step):
                raise StepDefinitionError(f"{step!r} is not a step", path=name)
        converters: list[Converter | None] = [None]
        for before, after in itertools.pairwise(steps):
            problem, converter = connection(before.output_type, after.input_type)
            if problem:
                raise StepDefinitionError(
                    f"output of '{before.name}' does not fit input of '{after.name}': {problem}",
                    path=name,
                )
            converters.append(converter)
        self.steps = steps
        self._converters = tuple(converters)
        super().__init__(
            name, input_type=steps[0].input_type, output_type=steps[-1].output_type, **options
        )

    def children(self) -> Sequence[Step[Any, Any]]:
        return self.steps

    async def _execute(self, value: Any) -> Any:
        for step, convert in zip(self.steps, self._converters, strict=True):
            if convert is not None:
                value = convert(value)
            value = await step._invoke(value)
        return value

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        return builder.sequence(f"chain: {self.name}", self.steps)
