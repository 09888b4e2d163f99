"""A pipeline declaration: named steps, each a lifecycle operation with its parameters, in a
``pipeline.toml`` (beside a project's stack folders) or built in Python.

A step runs after the steps it names in ``after`` and after every step whose outputs its
parameters use: ``dataset = "${synth.dataset}"`` takes the ``dataset`` output of step
``synth`` (a whole-string reference keeps the output's type; inside a longer string it is
formatted in). So the graph is declared once, by what flows between the steps.

```toml
[pipeline]
name = "refresh"
schedule = "0 3 * * *"   # optional: `slmops pipeline schedule` runs it then
watch = ["docs"]         # optional: and when these files (or corpus:NAME) change

[steps.ingest]
op = "ingest"
corpus = "handbook"
paths = ["docs"]

[steps.eval]
op = "eval"
stack = "handbook-rag"
dataset = "handbook-qa"
after = ["ingest"]
gates = ["faithfulness>=0.7"]
```
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from slmops.errors import ConfigError
from slmops.store.names import name_problem

PIPELINE_FILE = "pipeline.toml"
REFERENCE = re.compile(r"\$\{([a-z0-9][a-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${step.output}``: an output of an earlier step."""


class PipelineError(ConfigError):
    """A pipeline declaration is malformed, or a run cannot go on as asked."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    op: str
    params: dict[str, Any]
    after: tuple[str, ...] = ()

    def references(self) -> set[str]:
        """The steps whose outputs the parameters use."""
        return {
            match.group(1) for text in _strings(self.params) for match in REFERENCE.finditer(text)
        }

    def upstream(self) -> set[str]:
        return set(self.after) | self.references()


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: dict[str, StepSpec]
    directory: Path  # relative paths and Python steps' modules are found here
    description: str = ""
    schedule: str | None = None  # a cron expression
    watch: tuple[str, ...] = ()  # paths (relative to directory) or corpus:NAME
    source: Path | None = None  # the file it was read from, if any
    order: tuple[str, ...] = field(default=())
    # Python steps declared with Pipeline.function: call -> the function itself, so a
    # function defined anywhere (a notebook, a test) runs in this process without an import
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", tuple(_check_graph(self.name, self.steps)))

    def upstream(self, step: str) -> set[str]:
        return self.steps[step].upstream()

    def downstream(self, step: str) -> set[str]:
        """Every step that depends on ``step``, directly or through others."""
        found: set[str] = set()
        for name in self.order:
            if self.steps[name].upstream() & ({step} | found):
                found.add(name)
        return found

    def to_dict(self) -> dict[str, Any]:
        """The declaration as plain data (stored with each run, so a resume runs the same)."""
        return {
            "name": self.name,
            "description": self.description,
            "schedule": self.schedule,
            "watch": list(self.watch),
            "directory": str(self.directory),
            "source": str(self.source) if self.source else None,
            "steps": [
                {"name": s.name, "op": s.op, "after": list(s.after), "params": s.params}
                for s in self.steps.values()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineSpec:
        steps = {
            s["name"]: StepSpec(s["name"], s["op"], dict(s["params"]), tuple(s["after"]))
            for s in data["steps"]
        }
        return cls(
            name=data["name"],
            steps=steps,
            directory=Path(data["directory"]),
            description=data.get("description") or "",
            schedule=data.get("schedule"),
            watch=tuple(data.get("watch") or ()),
            source=Path(data["source"]) if data.get("source") else None,
        )

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _check_graph(pipeline: str, steps: Mapping[str, StepSpec]) -> list[str]:
    """The steps in an order that runs every step after its upstream steps (declaration order
    where the graph leaves a choice); raises PipelineError naming an unknown step or a cycle."""
    if not steps:
        raise PipelineError(f"pipeline {pipeline!r} has no steps; add a [steps.NAME] table")
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for step in steps.values():
        for other in sorted(step.upstream()):
            if other not in steps:
                how = "after" if other in step.after else "${" + other + ".…} reference"
                raise PipelineError(
                    f"pipeline {pipeline!r}: step {step.name!r} names step {other!r} ({how}), "
                    f"which does not exist; steps: {', '.join(steps)}"
                )
            if other == step.name:
                raise PipelineError(f"pipeline {pipeline!r}: step {step.name!r} depends on itself")
        sorter.add(step.name, *step.upstream())
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PipelineError(f"pipeline {pipeline!r} has a cycle: {cycle}") from None
    position = {name: i for i, name in enumerate(steps)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def parse_pipeline(
    data: Mapping[str, Any], *, directory: Path, where: str, source: Path | None = None
) -> PipelineSpec:
    """A pipeline from parsed TOML (or any mapping of the same shape)."""
    header = data.get("pipeline")
    if not isinstance(header, Mapping):
        raise PipelineError(f"{where}: no [pipeline] table with the pipeline's name")
    unknown = set(data) - {"pipeline", "steps"}
    if unknown:
        raise PipelineError(f"{where}: unknown table(s) {', '.join(sorted(unknown))}")
    extra = set(header) - {"name", "description", "schedule", "watch"}
    if extra:
        raise PipelineError(f"{where}: [pipeline] has unknown key(s) {', '.join(sorted(extra))}")
    name = header.get("name")
    if not isinstance(name, str):
        raise PipelineError(f'{where}: [pipeline] needs name = "..."')
    problem = name_problem("pipeline", name)
    if problem:
        raise PipelineError(f"{where}: [pipeline] {problem}")
    description = header.get("description", "")
    schedule = header.get("schedule")
    watch = header.get("watch", [])
    if not isinstance(description, str):
        raise PipelineError(f"{where}: [pipeline] description must be text")
    if schedule is not None and not isinstance(schedule, str):
        raise PipelineError(f"{where}: [pipeline] schedule must be a cron expression (text)")
    if not isinstance(watch, list) or not all(isinstance(w, str) and w for w in watch):
        raise PipelineError(f"{where}: [pipeline] watch must be a list of paths or corpus:NAME")
    raw_steps = data.get("steps", {})
    if not isinstance(raw_steps, Mapping):
        raise PipelineError(f"{where}: steps must be tables: [steps.NAME]")
    steps: dict[str, StepSpec] = {}
    for step_name, table in raw_steps.items():
        steps[step_name] = _parse_step(step_name, table, where)
    if schedule is not None:
        from slmops.pipelines.schedule import check_cron

        check_cron(schedule, where=f"{where}: [pipeline] schedule")
    return PipelineSpec(
        name=name,
        steps=steps,
        directory=directory,
        description=description,
        schedule=schedule,
        watch=tuple(watch),
        source=source,
    )


def _parse_step(name: str, table: Any, where: str) -> StepSpec:
    problem = name_problem("step", name)
    if problem:
        raise PipelineError(f"{where}: {problem}")
    if not isinstance(table, Mapping):
        raise PipelineError(f"{where}: [steps.{name}] must be a table")
    params = dict(table)
    op = params.pop("op", None)
    after = params.pop("after", [])
    if not isinstance(op, str) or not op:
        raise PipelineError(f'{where}: [steps.{name}] needs op = "..." (ingest, eval, ...)')
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise PipelineError(f"{where}: [steps.{name}] after must be a list of step names")
    return StepSpec(name, op, params, tuple(after))


def load_pipeline(path: Path) -> PipelineSpec:
    """The pipeline declared in ``path`` (a pipeline.toml)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read pipeline file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: not valid TOML: {exc}") from None
    return parse_pipeline(data, directory=path.parent.resolve(), where=str(path), source=path)


def find_pipeline(ref: str, roots: list[Path]) -> Path:
    """The pipeline file ``ref`` names: a path to a .toml file or a folder holding
    pipeline.toml, else a folder of that name under one of ``roots``."""
    candidate = Path(ref).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate.resolve()
    if (candidate / PIPELINE_FILE).is_file() and ("/" in ref or ref.startswith(".")):
        return (candidate / PIPELINE_FILE).resolve()
    for root in roots:
        path = root / ref / PIPELINE_FILE
        if path.is_file():
            return path.resolve()
    where = ", ".join(str(root) for root in dict.fromkeys(roots))
    raise PipelineError(
        f"no pipeline {ref!r}: no {ref}/{PIPELINE_FILE} in {where}; "
        f"create one with: slmops pipeline init {Path(ref).name}"
    )
