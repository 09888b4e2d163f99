"""Declaring a pipeline in Python, the same thing a pipeline.toml declares:

```python
from slmops.pipelines import Pipeline

refresh = Pipeline("refresh", directory=".")
refresh.step("ingest", "ingest", corpus="handbook", paths=["docs"])
refresh.step("eval", "eval", stack="handbook-rag", dataset="handbook-qa",
             after=["ingest"], gates=["faithfulness>=0.7"])

@refresh.function(after=["eval"])
def notify(ctx, **_):
    return {"told": "the team"}

outcome = refresh.run(workspace)
```
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slmops.pipelines.spec import PipelineError, PipelineSpec, StepSpec
from slmops.store.names import name_problem
from slmops.store.workspace import Workspace


class Pipeline:
    def __init__(
        self,
        name: str,
        *,
        directory: str | Path = ".",
        description: str = "",
        schedule: str | None = None,
        watch: Sequence[str] = (),
    ) -> None:
        problem = name_problem("pipeline", name)
        if problem:
            raise PipelineError(problem)
        self.name = name
        self.directory = Path(directory).resolve()
        self.description = description
        self.schedule = schedule
        self.watch = tuple(watch)
        self._steps: dict[str, StepSpec] = {}
        self._functions: dict[str, Callable[..., Any]] = {}

    def step(self, name: str, op: str, /, *, after: Sequence[str] = (), **params: Any) -> str:
        """Add a step running operation ``op`` with ``params``; returns its name (for after)."""
        problem = name_problem("step", name)
        if problem:
            raise PipelineError(problem)
        if name in self._steps:
            raise PipelineError(f"pipeline {self.name!r} already has a step {name!r}")
        self._steps[name] = StepSpec(name, op, dict(params), tuple(after))
        return name

    def function(
        self, *, name: str | None = None, after: Sequence[str] = (), **args: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator adding a Python step that calls the decorated function. It runs in this
        process wherever it is defined; a resume from another process needs it importable
        (module-level in an installed module, or in a file of the pipeline's folder)."""

        def add(function: Callable[..., Any]) -> Callable[..., Any]:
            module = inspect.getmodule(function)
            source = inspect.getsourcefile(function)
            module_name = module.__name__ if module else function.__module__
            if source and Path(source).resolve().parent == self.directory:
                module_name = Path(source).stem  # loaded from the folder (and hashed) by name
            call = f"{module_name}:{function.__name__}"
            self.step(name or function.__name__, "python", after=after, call=call, args=args)
            self._functions[call] = function
            return function

        return add

    def spec(self) -> PipelineSpec:
        return PipelineSpec(
            name=self.name,
            steps=dict(self._steps),
            directory=self.directory,
            description=self.description,
            schedule=self.schedule,
            watch=self.watch,
            functions=dict(self._functions),
        )

    def run(self, workspace: Workspace, **options: Any) -> Any:
        """Run it in this process (see PipelineRunner.run for ``trigger`` and ``force``)."""
        from slmops.pipelines.runner import PipelineRunner

        return PipelineRunner(workspace).run(self.spec(), **options)
