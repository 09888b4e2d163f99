"""A running app stack: a step whose nodes read from and write to a shared state.

The state starts as ``{"input": <stack input>, "settings": {...}}``; each node's output is
stored under the node's name. A node's input is a state path or a table of paths, read as
plain JSON-like values (so prompts and user functions see dicts and lists, whatever step
produced them). A stack is itself a step, so it nests inside other stacks (one nested span)
and inside any core composition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry import trace as otel_trace
from pydantic import BaseModel

from slmops.apps.lock import Resolved
from slmops.apps.manifest import InputPath, LoadedManifest
from slmops.core.llm_call import LLMCall
from slmops.core.step import Step, StepState
from slmops.core.tracing import trace_id_of
from slmops.core.typing_rules import adapter
from slmops.errors import ConfigError, RoutingError, StepInputError

if TYPE_CHECKING:
    from slmops.core.graph import GraphBuilder


def to_plain(value: Any) -> Any:
    """``value`` as JSON-like Python (dicts, lists, strings, numbers), models included."""
    return adapter(Any).dump_python(value, mode="json")


def read_path(state: Mapping[str, Any], path: str) -> Any:
    """The JSON-like value at ``path`` (``retrieve.hits.0.text``) in the state."""
    root, *rest = path.split(".")
    value = to_plain(state[root])
    for part in rest:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise StepInputError(f"the state has nothing at '{path}' (no '{part}')")
    return value


@dataclass(frozen=True)
class Node:
    """One manifest step, compiled: the step to run and where its input comes from."""

    name: str
    step: Step[Any, Any]
    input: InputPath | None  # None: the input is ``constant``
    for_each: str | None = None
    constant: Any = None
    when: str | None = None  # a state path: the node runs only when its value is true

    def skipped(self, state: Mapping[str, Any]) -> bool:
        """Whether the node's ``when`` is false in this state; its output is then None."""
        if self.when is None or read_path(state, self.when):
            return False
        span = otel_trace.get_current_span()
        span.add_event("skipped", {"step": self.name, "when": self.when})
        return True

    def value(self, state: Mapping[str, Any]) -> Any:
        if self.input is None:
            return self.constant
        if self.for_each is None:
            return self._read(state)
        items = read_path(state, self.for_each)
        if not isinstance(items, list):
            raise StepInputError(f"for_each '{self.for_each}' is not a list", path=self.name)
        shared = self._read(state) if isinstance(self.input, dict) else {}
        return [{**shared, "item": item} for item in items]

    def _read(self, state: Mapping[str, Any]) -> Any:
        if self.input is None:
            return self.constant
        if isinstance(self.input, str):
            return read_path(state, self.input)
        return {variable: read_path(state, path) for variable, path in self.input.items()}


def _stack_version(
    manifest_sha256: str, nodes: Sequence[Node], overrides: Mapping[str, Any] | None = None
) -> str:
    """The manifest's hash combined with every step's version (a user function's code hash,
    a nested stack's own version) and any settings given at build time: changing any of
    them makes a new stack version."""
    parts = [manifest_sha256, *(f"{node.name}={node.step.version}" for node in nodes)]
    if overrides:
        parts.append("settings=" + json.dumps(dict(overrides), sort_keys=True, default=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


class Stack(Step[Any, Any]):
    """An app stack built from a manifest (see :func:`slmops.apps.build.build_stack`)."""

    kind: ClassVar[str] = "stack"

    def __init__(
        self,
        name: str,
        *,
        manifest: LoadedManifest,
        resolved: Resolved,
        nodes: Sequence[Node],
        input_type: type[BaseModel],
        output: str,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.manifest = manifest
        self.resolved = resolved
        self.nodes = tuple(nodes)
        self.output_node = output
        # settings given at build time (``--answer``), over the manifest's [settings]
        self.setting_overrides = dict(settings or {})
        output_step = next(node.step for node in self.nodes if node.name == output)
        super().__init__(
            name,
            input_type=input_type,
            output_type=output_step.output_type,
            description=manifest.manifest.stack.description,
            version=_stack_version(manifest.sha256, self.nodes, self.setting_overrides),
        )

    @property
    def stack_name(self) -> str:
        return self.manifest.name

    def children(self) -> Sequence[Step[Any, Any]]:
        return tuple(node.step for node in self.nodes)

    def span_attributes(self) -> dict[str, Any]:
        summary = self.resolved.summary()
        return {
            "slmops.stack.name": self.stack_name,
            "slmops.stack.manifest": str(self.manifest.path),
            "slmops.stack.locked": self.resolved.locked,
            "slmops.stack.corpora": json.dumps(summary["corpora"]),
            "slmops.stack.prompts": json.dumps(summary["prompts"]),
            "slmops.stack.models": json.dumps(summary["models"]),
            "slmops.stack.model_digests": json.dumps(summary["model_digests"]),
        }

    def graph_label(self) -> str:
        return f"stack: {self.stack_name}"

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        return builder.sequence(f"stack: {self.stack_name}", self.children())

    # --- input ---------------------------------------------------------------------------

    def text_field(self) -> str | None:
        """The input field a plain string fills: the only required string field, if any."""
        fields = self.input_type.model_fields
        required = [n for n, f in fields.items() if f.is_required()]
        candidates = required if required else list(fields)
        if len(candidates) == 1 and fields[candidates[0]].annotation is str:
            return candidates[0]
        return None

    def _validate_input(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            field = self.text_field()
            if field is None:
                raise StepInputError(
                    "this stack takes JSON input with fields "
                    f"{', '.join(self.input_type.model_fields)}, not plain text",
                    path=path,
                )
            value = {field: value}
        elif isinstance(value, BaseModel) and not isinstance(value, self.input_type):
            value = value.model_dump()
        return super()._validate_input(value, path)

    def _initial_state(self, value: BaseModel) -> dict[str, Any]:
        settings = {**self.manifest.manifest.settings, **self.setting_overrides}
        return {"input": value, "settings": settings}

    # --- running -------------------------------------------------------------------------

    async def _execute(self, value: Any) -> Any:
        state = self._initial_state(value)
        for node in self.nodes:
            state[node.name] = await _run_node(node, state)
        return state[self.output_node]

    async def input_of(self, value: Any, node_name: str) -> Any:
        """What node ``node_name`` receives when the stack runs on ``value``: the nodes before
        it run (traced as one run of this stack); it and the nodes after it do not. Training
        data uses this to render exactly the prompt a model step is sent at run time."""
        if node_name not in {node.name for node in self.nodes}:
            raise StepInputError(f"stack {self.stack_name!r} has no step {node_name!r}")
        with self._traced() as (path, span, _runtime):
            validated = self._validate_input(value, path)
            span.set_attribute("slmops.input", self._dump(self._input_adapter, validated))
            state = self._initial_state(validated)
            for node in self.nodes:
                if node.name == node_name:
                    return node.value(state)
                state[node.name] = await _run_node(node, state)
        raise AssertionError("unreachable: the node was found above")

    def streaming_node(self) -> Node | None:
        """The node whose text streams to the caller: the last plain-text LLM call, or the
        last nested stack or route that itself streams (so a router streams its target)."""
        for node in reversed(self.nodes):
            if not node.for_each and can_stream(node.step):
                return node
        return None

    async def astream(
        self,
        value: Any,
        *,
        on_finish: Callable[[Any, str], None] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Run the stack, yielding the streaming node's text as the model produces it; the
        nodes after it (citations) run once it is complete. ``on_finish(output, trace_id)``
        receives the stack's output; ``attributes`` go on the run's root span (a server's
        request id). Consume it within one task (one ``asyncio.run``)."""
        streamer = self.streaming_node()
        extra = {"slmops.stream": True, **(attributes or {})}
        with self._traced(attributes=extra) as (path, span, _runtime):
            span.add_event("state", {"state": StepState.INIT.value})
            validated = self._validate_input(value, path)
            span.set_attribute("slmops.input", self._dump(self._input_adapter, validated))
            span.add_event("state", {"state": StepState.RUNNING.value})
            state = self._initial_state(validated)
            for node in self.nodes:
                if node is streamer and not node.skipped(state):
                    finished: list[Any] = []
                    async for piece in _astream(node.step, node.value(state), finished):
                        yield piece
                    state[node.name] = finished[0]
                elif node is not streamer:
                    state[node.name] = await _run_node(node, state)
                else:
                    state[node.name] = None
            output = self._validate_output(state[self.output_node], path)
            self._finish(span, output, self._dump(self._output_adapter, output))
            if on_finish is not None:
                on_finish(output, trace_id_of(span))


async def _run_node(node: Node, state: Mapping[str, Any]) -> Any:
    """The node's output: its step run on its input, or None when ``when`` skips it."""
    if node.skipped(state):
        return None
    return await node.step._invoke(node.value(state))


def can_stream(step: Step[Any, Any]) -> bool:
    """Whether the step yields text as it is generated: a plain-text LLM call, a stack with
    such a node, or a route to at least one such stack."""
    if isinstance(step, LLMCall):
        return not step.structured
    if isinstance(step, Stack):
        return step.streaming_node() is not None
    if isinstance(step, Route):
        return any(can_stream(target) for target in step.routes.values())
    return False


def _astream(step: Step[Any, Any], value: Any, output: list[Any]) -> AsyncIterator[str]:
    """Stream a streaming node; its output (the text, or the stack's output) lands in
    ``output``."""
    if isinstance(step, LLMCall):
        return step.astream(value, on_finish=lambda result, _: output.append(result.text))
    assert isinstance(step, Stack | Route)
    return step.astream(value, on_finish=lambda result, _: output.append(result))


class Route(Step[Any, Any]):
    """Send the input to the stack named by a label computed earlier (``by``)."""

    kind: ClassVar[str] = "route"
    shape: ClassVar[str] = "diamond"

    def __init__(self, name: str, *, by: str, routes: Mapping[str, Stack]) -> None:
        self.by = by
        self.routes = dict(routes)
        outputs = list(dict.fromkeys(stack.output_type for stack in self.routes.values()))
        output_type: Any = outputs[0]
        for extra in outputs[1:]:
            output_type = output_type | extra
        super().__init__(name, input_type=dict[str, Any], output_type=output_type)

    def children(self) -> Sequence[Step[Any, Any]]:
        return tuple(self.routes.values())

    def _target(self, label: Any) -> Stack:
        """The stack for ``label``, recorded on the current span."""
        if label not in self.routes:
            raise RoutingError(f"label {label!r} has no route; routes: {sorted(self.routes)}")
        span = otel_trace.get_current_span()
        span.set_attribute("slmops.decision.branch", str(label))
        span.add_event("route", {"branch": str(label)})
        return self.routes[label]

    async def _execute(self, value: dict[str, Any]) -> Any:
        return await self._target(value["route"])._invoke(value["value"])

    async def astream(
        self, value: dict[str, Any], *, on_finish: Callable[[Any, str], None] | None = None
    ) -> AsyncIterator[str]:
        """Stream the chosen stack (a stack that cannot stream yields nothing and just
        finishes); ``on_finish(output, trace_id)`` receives its output."""
        with self._traced(attributes={"slmops.stream": True}) as (path, span, _runtime):
            validated = self._validate_input(value, path)
            span.set_attribute("slmops.input", self._dump(self._input_adapter, validated))
            span.add_event("state", {"state": StepState.RUNNING.value})
            target = self._target(validated["route"])
            finished: list[Any] = []
            async for piece in _astream(target, validated["value"], finished):
                yield piece
            output = self._validate_output(finished[0], path)
            self._finish(span, output, self._dump(self._output_adapter, output))
            if on_finish is not None:
                on_finish(output, trace_id_of(span))

    def draw(self, builder: GraphBuilder) -> tuple[list[str], list[str]]:
        return builder.branches(f"{self.name}\nby: {self.by}", self.routes)


@dataclass(frozen=True)
class RouteNode(Node):
    """A route node reads its label and its payload from two places in the state."""

    by: str = ""

    def value(self, state: Mapping[str, Any]) -> Any:
        return {"route": read_path(state, self.by), "value": self._read(state)}


def parse_stack_input(text: str) -> Any:
    """A stack's input typed by a person (CLI argument, console form): a JSON object when
    the text is one (for stacks with several input fields), else the text itself."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or an integer over 4300 digits
            raise ConfigError(f"input looks like JSON but does not parse: {exc}") from None
        except RecursionError:  # json decodes nested arrays and objects recursively
            raise ConfigError("input looks like JSON but is nested too deeply") from None
    return text
