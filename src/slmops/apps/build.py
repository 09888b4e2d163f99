"""Compile a manifest into a runnable :class:`Stack`, resolving dependency stacks.

Dependencies are built depth first; a stack that (through any chain) depends on itself is
refused, naming the cycle. User Python steps (``call = "module:function"``) are imported with
the stack's folder on ``sys.path``, so a stack can keep its code beside its manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from slmops.apps.citations import Cite
from slmops.apps.classify import EmbeddingClassifier, LabelEvidence
from slmops.apps.discovery import find_stack, stack_roots
from slmops.apps.extractive import SelectSentences
from slmops.apps.lock import Resolved, resolve
from slmops.apps.manifest import (
    CiteStep,
    ClassifyStep,
    FieldSpec,
    FunctionStep,
    LLMStep,
    LoadedManifest,
    ManifestError,
    RetrieveStep,
    RouteStep,
    SampleStep,
    SelectStep,
    StackStep,
    StepSpec,
    check_references,
    load_manifest,
)
from slmops.apps.sampling import Sample
from slmops.apps.stack import Node, Route, RouteNode, Stack
from slmops.core.concurrent import Map
from slmops.core.function import Function
from slmops.core.options import Retry
from slmops.core.runtime import resolving_in
from slmops.core.step import Step
from slmops.data.retrieve import Retrieve
from slmops.errors import SlmopsError
from slmops.models.base import GenerationParams
from slmops.store.workspace import Workspace


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "list[string]": list[str],
    "messages": list[Message],
    "any": Any,
}


def field_type(spec: FieldSpec) -> Any:
    if isinstance(spec.type, list):
        return Literal[tuple(spec.type)]
    return _TYPES[spec.type]


def model_from_fields(name: str, fields: dict[str, FieldSpec]) -> type[BaseModel]:
    """A pydantic model for declared fields: required ones, or optional with a default."""
    definitions: dict[str, Any] = {}
    for field, spec in fields.items():
        tp = field_type(spec)
        if spec.required:
            definitions[field] = (tp, ...)
        elif spec.default is not None:
            definitions[field] = (tp, spec.default)
        elif spec.type == "messages":
            definitions[field] = (tp, [])
        else:
            definitions[field] = (tp | None, None)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        name, __config__=ConfigDict(extra="forbid"), **definitions
    )
    return model


def _class_name(stack: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in stack.replace("_", "-").split("-")) + suffix


class _Builder:
    def __init__(
        self,
        workspace: Workspace,
        *,
        use_lock: bool,
        models: dict[str, str] | None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.workspace = workspace
        self.use_lock = use_lock
        self.models = models
        self.settings = settings
        self.roots = stack_roots(workspace)

    def build(self, path: Path, chain: tuple[Path, ...], node_name: str | None) -> Stack:
        if path in chain:
            names = [load_manifest(p).name for p in (*chain[chain.index(path) :], path)]
            raise ManifestError(f"stack dependency cycle: {' -> '.join(names)}")
        loaded = load_manifest(path)
        top_level = not chain  # model overrides apply to the stack asked for, not its members
        resolved = resolve(
            loaded,
            self.workspace,
            use_lock=self.use_lock,
            models=self.models if top_level else None,
        )
        dependency_paths = {
            ref: find_stack(ref, self.roots, near=loaded.directory)
            for ref in loaded.manifest.stack.depends_on
        }

        def dependencies(ref: str, node_name: str) -> Stack:
            return self.build(dependency_paths[ref], (*chain, path), node_name)

        nodes = []
        previous = "input"
        for index, spec in enumerate(loaded.manifest.steps, start=1):
            try:
                node = self._node(spec, previous, loaded, resolved, dependencies)
                nodes.append(replace(node, when=spec.when) if spec.when else node)
            except ManifestError:
                raise
            except SlmopsError as exc:
                raise ManifestError(f"{loaded.path}: steps[{index}] ({spec.name}): {exc}") from None
            previous = spec.name
        input_model = model_from_fields(
            _class_name(loaded.name, "Input"), loaded.manifest.stack.input
        )
        overrides = self.settings if top_level else None
        if overrides:
            merged = {**loaded.manifest.settings, **overrides}
            problem = check_references(loaded.manifest.model_copy(update={"settings": merged}))
            if problem:
                raise ManifestError(f"{loaded.path} with settings {overrides}: {problem}")
        return Stack(
            node_name or loaded.name,
            manifest=loaded,
            resolved=resolved,
            nodes=nodes,
            input_type=input_model,
            output=loaded.output_step,
            settings=overrides,
        )

    def _node(
        self,
        spec: StepSpec,
        previous: str,
        loaded: LoadedManifest,
        resolved: Resolved,
        dependencies: Callable[[str, str], Stack],
    ) -> Node:
        options: dict[str, Any] = {
            "retry": Retry(attempts=spec.retry) if spec.retry > 1 else None,
            "timeout_s": spec.timeout_s,
            "cache": spec.cache,
            "description": spec.description,
        }
        source = spec.input if spec.input is not None else previous
        step: Step[Any, Any]
        if isinstance(spec, RetrieveStep):
            step = Retrieve(
                resolved.corpus_ref(spec.corpus),
                name=spec.name,
                k=spec.k,
                mode=spec.mode,
                where=spec.where,
                **options,
            )
        elif isinstance(spec, LLMStep):
            return self._llm_node(spec, source, loaded, resolved, options)
        elif isinstance(spec, FunctionStep):
            function, code_version = _import(spec.call, loaded)
            step = Function(function, name=spec.name, version=code_version, **options)
        elif isinstance(spec, StackStep):
            step = dependencies(spec.stack, spec.name)  # its span carries the node's name
        elif isinstance(spec, RouteStep):
            routes = {label: dependencies(target, target) for label, target in spec.routes.items()}
            return RouteNode(
                spec.name, Route(spec.name, by=spec.by, routes=routes), source, by=spec.by
            )
        elif isinstance(spec, CiteStep):
            step = Cite(
                spec.name,
                min_relevance=spec.min_relevance,
                min_support=spec.min_support,
                min_score=spec.min_score,
                max_citations=spec.max_citations,
                refusal=spec.refusal,
                **options,
            )
            source = {"question": spec.question, "retrieval": spec.retrieval}
            source |= {"answer": spec.answer} if spec.answer is not None else {}
            source |= {"selection": spec.selection} if spec.selection is not None else {}
        elif isinstance(spec, SelectStep):
            constant_mode = "." not in spec.mode
            step = SelectSentences(
                spec.name,
                mode=spec.mode if constant_mode else "extractive",  # type: ignore[arg-type]
                scorer=spec.scorer,
                lexical_weight=spec.lexical_weight,
                margin=spec.margin,
                max_answer_sentences=spec.max_answer_sentences,
                context_sentences=spec.context_sentences,
                **options,
            )
            source = {"question": spec.question, "retrieval": spec.retrieval}
            source |= {} if constant_mode else {"mode": spec.mode}
        elif isinstance(spec, ClassifyStep):
            step = EmbeddingClassifier(
                spec.name,
                labels={
                    label: LabelEvidence(
                        evidence.description,
                        tuple(evidence.examples),
                        evidence.corpus and resolved.corpus_ref(evidence.corpus),
                    )
                    for label, evidence in spec.labels.items()
                },
                output_name=_class_name(spec.name, "Label"),
                **options,
            )
        elif isinstance(spec, SampleStep):
            step = Sample(
                spec.name,
                corpus=resolved.corpus_ref(spec.corpus),
                seed=spec.seed,
                min_chars=spec.min_chars,
                **options,
            )
            if isinstance(spec.n, int):
                return Node(spec.name, step, None, constant=spec.n)
            source = spec.n
        else:  # pragma: no cover - the manifest schema admits no other kind
            raise ManifestError(f"unknown step kind {spec.kind!r}")
        return Node(spec.name, step, source)

    def _llm_node(
        self,
        spec: LLMStep,
        source: Any,
        loaded: LoadedManifest,
        resolved: Resolved,
        options: dict[str, Any],
    ) -> Node:
        output_type: Any = str
        if spec.labels is not None:
            output_type = _label_model(_class_name(spec.name, "Label"), spec.labels)
        elif spec.fields is not None:
            output_type = model_from_fields(_class_name(spec.name, "Output"), spec.fields)
        prompt = resolved.prompts[spec.prompt]
        call = prompt.to_llm_call(
            step_name=spec.name if spec.for_each is None else f"{spec.name}-item",
            input_type=Any,
            output_type=output_type,
            model=resolved.models[spec.model],
            params=GenerationParams(
                max_tokens=spec.max_tokens,
                temperature=spec.temperature,
                seed=spec.seed,
                stop=tuple(spec.stop),
            ),
            **options,
        )
        if spec.for_each is None:
            return Node(spec.name, call, source)
        shared = source if isinstance(source, dict) and spec.input is not None else {}
        return Node(spec.name, Map(spec.name, call, max_concurrency=1), shared, spec.for_each)


def _label_model(name: str, labels: list[str]) -> Any:
    """A model with one field, ``label``, that must be one of ``labels``."""
    label_type: Any = Literal[tuple(labels)]  # the manifest's labels, known at run time
    return create_model(name, label=(label_type, ...))


def _load_module(module_name: str, directory: Path) -> Any:
    """A module from the stack's folder, loaded under a name private to that folder: two
    stacks may both have ``steps.py``, and a rebuilt stack sees its edited code. Anything
    else (an installed package) is imported normally."""
    source = directory.joinpath(*module_name.split(".")).with_suffix(".py")
    if not source.is_file():
        return importlib.import_module(module_name)
    private = f"slmops_stack_{hashlib.sha256(str(directory).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(f"{private}.{module_name}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def _code_version(module: Any, directory: Path) -> str:
    """A hash of the module's source when it is the stack's own code (so an edit makes a new
    step version, and so a new stack version); "1" for installed packages."""
    source = getattr(module, "__file__", None)
    if source is None or not Path(source).resolve().is_relative_to(directory.resolve()):
        return "1"
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:12]


def _import(call: str, loaded: LoadedManifest) -> tuple[Any, str]:
    """The function ``module:attribute`` names, and its code version."""
    module_name, _, attribute = call.partition(":")
    directory = str(loaded.directory)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the stack's modules can import their siblings
    try:
        module = _load_module(module_name, loaded.directory)
    except Exception as exc:  # an import runs user code: report whatever it raised
        raise ManifestError(
            f"{loaded.path}: cannot import '{module_name}' for call = {call!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ManifestError(
            f"{loaded.path}: {call!r}: '{module_name}' has no function '{attribute}'"
        )
    return function, _code_version(module, loaded.directory)


def build_stack(
    ref: str | Path,
    workspace: Workspace,
    *,
    use_lock: bool = True,
    models: dict[str, str] | None = None,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Stack:
    """The stack ``ref`` names (a name or a path), with its dependencies, ready to run.
    ``models`` replaces the stack's model URIs by alias (``{"chat": "gguf:/m.gguf"}``);
    ``settings`` replaces entries of its [settings] (``{"answer": "hybrid"}``), checked as
    the manifest's own are."""
    path = find_stack(str(ref), stack_roots(workspace))
    builder = _Builder(workspace, use_lock=use_lock, models=models, settings=settings)
    with resolving_in(workspace):  # registry: model URIs resolve in this workspace
        return builder.build(path, (), name)
